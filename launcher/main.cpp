#include "launcher/launcher.h"

int main(int argc, char** argv) {
  atelier::launcher::use_short_openmp_waits(argc, argv);
  return atelier::launcher::run(argc, argv);
}
