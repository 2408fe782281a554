#include "launcher/launcher.h"

int main(int argc, char** argv) { return atelier::launcher::run(argc, argv); }
