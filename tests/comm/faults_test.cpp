// A rank that dies or hangs must not leave the others waiting: each case
// runs a 2-rank job (Fault.PeerFailsDuringCollectives in collectives_test)
// and checks that the whole job ends with an error. `timeout` only guards
// CTest against the hang these tests exist to rule out.
#include <gtest/gtest.h>

#include "tests/comm/run_command.h"

namespace atelier::comm {
namespace {

using testing::run_command;

testing::CommandResult faulty_job(const std::string& fault) {
  return run_command("timeout 120 " + testing::mpirun(2) + "-x ATELIER_TEST_FAULT=" + fault + " " +
                     ATELIER_COMM_MPI_TEST + " --gtest_filter=Fault.PeerFailsDuringCollectives");
}

TEST(Faults, KilledRankMakesTheJobExitNonZero) {
  const auto job = faulty_job("kill");
  EXPECT_NE(job.status, 0) << job.output;
  EXPECT_NE(job.status, 124) << "the job hung:\n" << job.output;
  EXPECT_EQ(job.output.find("finished although its peer failed"), std::string::npos) << job.output;
}

TEST(Faults, HangingRankIsAbortedByTheTimeoutNamingRankAndOperation) {
  const auto job = faulty_job("hang");
  EXPECT_NE(job.status, 0) << job.output;
  EXPECT_NE(job.status, 124) << "the job hung:\n" << job.output;
  EXPECT_NE(job.output.find("rank 0: collective all_reduce"), std::string::npos) << job.output;
  EXPECT_NE(job.output.find("dist.timeout_s"), std::string::npos) << job.output;
}

}  // namespace
}  // namespace atelier::comm
