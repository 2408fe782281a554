// Multi-rank tests: run under `mpirun -np 2` by CTest (see CMakeLists.txt).
// Expectations are closed-form in the rank, so every rank checks its own
// result; the reducer is compared with the simple all-reduce oracle.
#include <gtest/gtest.h>

#include <algorithm>

#include <csignal>
#include <cstdlib>
#include <thread>
#include <torch/torch.h>

#include "comm/comm.h"

namespace atelier::comm {
namespace {

Communicator& world() {
  static auto comm = make_communicator(detect_environment(), {"mpi", 60});
  return *comm;
}

std::shared_ptr<Communicator> world_ptr() {
  static std::shared_ptr<Communicator> shared(&world(), [](Communicator*) {});
  return shared;
}

// 0, 1, 2, ... (kept small: exact in every dtype below) scaled by rank + 1.
torch::Tensor ramp(int64_t n, at::ScalarType type, int rank) {
  return (torch::arange(n, torch::kLong) % 7 * (rank + 1)).to(type);
}

class AllReduce : public ::testing::TestWithParam<std::tuple<at::ScalarType, int64_t>> {};

TEST_P(AllReduce, SumsAndAveragesAcrossRanks) {
  const auto [type, n] = GetParam();
  auto& comm = world();
  const int w = comm.world_size();
  ASSERT_EQ(w, 2) << "run under mpirun -np 2";
  auto sum = ramp(n, type, comm.rank());
  comm.all_reduce(sum, ReduceOp::Sum);
  // sum over ranks of (rank + 1) = w(w+1)/2
  EXPECT_TRUE(torch::equal(sum, ramp(n, type, 0) * (w * (w + 1) / 2))) << c10::toString(type) << " n=" << n;
  if (at::isFloatingType(type)) {
    auto avg = ramp(n, type, comm.rank());
    comm.all_reduce(avg, ReduceOp::Avg);
    EXPECT_TRUE(torch::allclose(avg.to(torch::kDouble), ramp(n, torch::kDouble, 0) * ((w + 1) / 2.0)));
  }
}

INSTANTIATE_TEST_SUITE_P(
    DtypesAndSizes, AllReduce,
    ::testing::Combine(::testing::Values(at::kFloat, at::kDouble, at::kInt, at::kLong, at::kBFloat16, at::kHalf,
                                         at::kByte),
                       ::testing::Values(int64_t{0}, int64_t{1}, int64_t{7}, int64_t{1000}, int64_t{(1 << 20) + 3})));

TEST(Collectives, AllReduceOfANonContiguousTensorWritesBack) {
  auto& comm = world();
  auto base = torch::arange(12, torch::kFloat).reshape({3, 4}) * (comm.rank() + 1);
  auto view = base.t();
  comm.all_reduce(view, ReduceOp::Sum);
  EXPECT_TRUE(torch::equal(base, torch::arange(12, torch::kFloat).reshape({3, 4}) * 3));
}

TEST(Collectives, BroadcastFromEveryRoot) {
  auto& comm = world();
  for (int root = 0; root < comm.world_size(); ++root) {
    for (const auto type : {at::kFloat, at::kLong, at::kBFloat16}) {
      auto t = ramp(1001, type, comm.rank());
      comm.broadcast(t, root);
      EXPECT_TRUE(torch::equal(t, ramp(1001, type, root))) << "root " << root;
    }
    auto empty = torch::empty({0, 3});
    comm.broadcast(empty, root);
    EXPECT_EQ(empty.numel(), 0);
  }
  auto t = torch::zeros({2});
  EXPECT_THROW(comm.broadcast(t, comm.world_size()), CommError);
}

TEST(Collectives, AllGatherStringsOfDifferentLengthsInRankOrder) {
  auto& comm = world();
  const std::string mine = std::string(static_cast<size_t>(comm.rank() * 5), 'x') + "rank " +
                           std::to_string(comm.rank()) + std::string(1, '\0') + "end";
  const auto all = all_gather_strings(comm, mine);
  ASSERT_EQ(all.size(), static_cast<size_t>(comm.world_size()));
  for (int r = 0; r < comm.world_size(); ++r)
    EXPECT_EQ(all[r], std::string(static_cast<size_t>(r * 5), 'x') + "rank " + std::to_string(r) +
                          std::string(1, '\0') + "end");
  EXPECT_EQ(all_gather_strings(comm, ""), std::vector<std::string>(static_cast<size_t>(comm.world_size())));
}

TEST(Collectives, AllGatherStacksEveryRankInOrder) {
  auto& comm = world();
  const auto all = comm.all_gather(ramp(5, at::kDouble, comm.rank()).reshape({5, 1}));
  ASSERT_EQ(all.sizes(), (std::vector<int64_t>{comm.world_size(), 5, 1}));
  for (int r = 0; r < comm.world_size(); ++r)
    EXPECT_TRUE(torch::equal(all[r], ramp(5, at::kDouble, r).reshape({5, 1})));
  EXPECT_EQ(comm.all_gather(torch::empty({0})).sizes(), (std::vector<int64_t>{comm.world_size(), 0}));
}

TEST(Collectives, AllGatherOfMismatchedShapesNamesBothRanks) {
  auto& comm = world();
  const auto mine = torch::zeros({comm.rank() + 1});
  try {
    comm.all_gather(mine);
    FAIL() << "no error";
  } catch (const CommError& e) {
    const std::string other = "rank " + std::to_string(1 - comm.rank());
    EXPECT_NE(std::string(e.what()).find("rank " + std::to_string(comm.rank())), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(other), std::string::npos) << e.what();
  }
  comm.barrier();  // the communicator is still usable after the error
}

// A small conv net: enough layers for several buckets at a 4 KiB bucket size.
torch::nn::Sequential tiny_net(int64_t extra_layers = 0) {
  torch::manual_seed(7);
  torch::nn::Sequential net(torch::nn::Conv2d(torch::nn::Conv2dOptions(3, 8, 3).padding(1)), torch::nn::ReLU(),
                            torch::nn::Conv2d(torch::nn::Conv2dOptions(8, 8, 3).padding(1)), torch::nn::ReLU(),
                            torch::nn::Flatten(), torch::nn::Linear(8 * 8 * 8, 10), torch::nn::Linear(10, 3));
  for (int64_t i = 0; i < extra_layers; ++i) net->push_back(torch::nn::Linear(3, 3));
  return net;
}

torch::Tensor loss_of(torch::nn::Sequential& net, int rank, int step) {
  torch::manual_seed(100 * step + rank);  // different data on each rank
  return net->forward(torch::randn({4, 3, 8, 8})).pow(2).mean();
}

TEST(GradientReducer, EqualsTheAllReduceEveryGradientOracle) {
  auto& comm = world();
  auto reduced = tiny_net();
  auto oracle = tiny_net();
  GradientReducer reducer(world_ptr(), reduced->parameters(), {4.0 / 1024, Compression::None});
  EXPECT_GT(reducer.bucket_count(), 2);
  reducer.prepare();
  loss_of(reduced, comm.rank(), 0).backward();
  reducer.finalize();
  loss_of(oracle, comm.rank(), 0).backward();
  average_gradients(comm, oracle->parameters());
  const auto a = reduced->parameters(), b = oracle->parameters();
  for (size_t i = 0; i < a.size(); ++i) EXPECT_TRUE(torch::equal(a[i].grad(), b[i].grad())) << "parameter " << i;
}

TEST(GradientReducer, CompressedWireStaysCloseToTheOracle) {
  auto& comm = world();
  for (const auto compression : {Compression::BF16, Compression::FP16}) {
    auto reduced = tiny_net();
    auto oracle = tiny_net();
    GradientReducer reducer(world_ptr(), reduced->parameters(), {4.0 / 1024, compression});
    reducer.prepare();
    loss_of(reduced, comm.rank(), 0).backward();
    reducer.finalize();
    loss_of(oracle, comm.rank(), 0).backward();
    average_gradients(comm, oracle->parameters());
    const auto a = reduced->parameters(), b = oracle->parameters();
    for (size_t i = 0; i < a.size(); ++i) {
      EXPECT_EQ(a[i].grad().scalar_type(), torch::kFloat);
      EXPECT_TRUE(torch::allclose(a[i].grad(), b[i].grad(), 2e-2, 1e-3)) << "parameter " << i;
    }
  }
}

TEST(GradientReducer, ReplicasStayBitIdenticalAcrossSteps) {
  auto& comm = world();
  auto net = tiny_net();
  torch::optim::Adam adam(net->parameters(), torch::optim::AdamOptions(1e-2));
  GradientReducer reducer(world_ptr(), net->parameters(), {1.0 / 1024, Compression::None});
  for (int step = 0; step < 5; ++step) {
    adam.zero_grad();
    reducer.prepare();
    loss_of(net, comm.rank(), step).backward();
    reducer.finalize();
    adam.step();
    const auto sums = comm.all_gather(torch::tensor({static_cast<int64_t>(checksum(net->parameters()))}));
    EXPECT_EQ(sums[0].item<int64_t>(), sums[1].item<int64_t>()) << "step " << step;
  }
}

TEST(GradientReducer, UnusedParametersAndForeignBackwardsAreHandled) {
  auto& comm = world();
  auto net = tiny_net();
  torch::nn::Linear unused(3, 3);  // registered, but takes no part in the loss
  auto parameters = net->parameters();
  for (const auto& p : unused->parameters()) parameters.push_back(p);
  GradientReducer reducer(world_ptr(), parameters, {4.0 / 1024, Compression::None});
  // Outside prepare()..finalize() gradients stay this rank's own.
  loss_of(net, comm.rank(), 0).backward();
  auto local = comm.all_gather(torch::tensor({static_cast<int64_t>(checksum({net->parameters()[0].grad()}))}));
  EXPECT_NE(local[0].item<int64_t>(), local[1].item<int64_t>());
  net->zero_grad();
  reducer.prepare();
  loss_of(net, comm.rank(), 1).backward();
  reducer.finalize();
  EXPECT_TRUE(torch::equal(unused->weight.grad(), torch::zeros_like(unused->weight)));
  const auto sums = comm.all_gather(torch::tensor({static_cast<int64_t>(checksum({net->parameters()[0].grad()}))}));
  EXPECT_EQ(sums[0].item<int64_t>(), sums[1].item<int64_t>());
}

// DDP's no_sync: three micro-batches, only the last under prepare(true),
// against the oracle that accumulates all three locally and then averages.
// A parameter unused by the last micro-batch keeps what earlier ones gave it.
TEST(GradientReducer, AccumulatedMicroBatchesAreReducedOnceWithTheirSum) {
  auto& comm = world();
  auto reduced = tiny_net();
  auto oracle = tiny_net();
  torch::nn::Linear late(3, 3), oracle_late(3, 3);  // used by the first micro-batches only
  oracle_late->weight.data().copy_(late->weight.data());
  oracle_late->bias.data().copy_(late->bias.data());
  auto parameters = reduced->parameters();
  for (const auto& p : late->parameters()) parameters.push_back(p);
  GradientReducer reducer(world_ptr(), parameters, {4.0 / 1024, Compression::None});
  for (int micro = 0; micro < 3; ++micro) {
    const bool last = micro == 2;
    if (last) reducer.prepare(/*accumulated=*/true);
    auto loss = loss_of(reduced, comm.rank(), micro);
    if (!last) loss = loss + late->forward(torch::ones({1, 3})).sum();
    loss.backward();
    auto oracle_loss = loss_of(oracle, comm.rank(), micro);
    if (!last) oracle_loss = oracle_loss + oracle_late->forward(torch::ones({1, 3})).sum();
    oracle_loss.backward();
  }
  reducer.finalize();
  auto oracle_parameters = oracle->parameters();
  for (const auto& p : oracle_late->parameters()) oracle_parameters.push_back(p);
  average_gradients(comm, oracle_parameters);
  for (size_t i = 0; i < parameters.size(); ++i)
    EXPECT_TRUE(torch::allclose(parameters[i].grad(), oracle_parameters[i].grad(), 1e-6, 1e-7)) << "parameter " << i;
  // Without `accumulated` the last backward alone would be reduced: the
  // test sees the difference.
  auto single = tiny_net();
  loss_of(single, comm.rank(), 2).backward();
  average_gradients(comm, single->parameters());
  EXPECT_FALSE(torch::allclose(parameters[0].grad(), single->parameters()[0].grad(), 1e-3, 1e-5));
}

// Overlap: with the first layer's gradient (the last one backward produces)
// behind a large convolution, the first bucket's all-reduce must start
// before the last gradient hook fires.
TEST(GradientReducer, FirstBucketIsReducedWhileBackwardIsStillRunning) {
  torch::manual_seed(3);
  torch::nn::Sequential net(torch::nn::Conv2d(torch::nn::Conv2dOptions(3, 32, 5).padding(2)), torch::nn::ReLU(),
                            torch::nn::Conv2d(torch::nn::Conv2dOptions(32, 32, 5).padding(2)), torch::nn::ReLU(),
                            torch::nn::AdaptiveAvgPool2d(1), torch::nn::Flatten(), torch::nn::Linear(32, 64),
                            torch::nn::Linear(64, 8));
  GradientReducer reducer(world_ptr(), net->parameters(), {16.0 / 1024, Compression::None});
  ASSERT_GE(reducer.bucket_count(), 2);
  reducer.prepare();
  net->forward(torch::randn({16, 3, 96, 96})).pow(2).mean().backward();
  reducer.finalize();
  const auto events = reducer.last_events();
  EXPECT_LT(events.front().started_us, reducer.last_hook_us());
  for (const auto& e : events) {
    EXPECT_LE(e.ready_us, e.started_us);
    EXPECT_LE(e.started_us, e.finished_us);
  }
}

TEST(GradientReducer, DifferentModelsOnTheRanksAreAnErrorNamingBothRanks) {
  auto& comm = world();
  auto net = tiny_net(comm.rank());
  try {
    GradientReducer reducer(world_ptr(), net->parameters(), {});
    FAIL() << "no error";
  } catch (const CommError& e) {
    EXPECT_NE(std::string(e.what()).find("rank " + std::to_string(1 - comm.rank())), std::string::npos) << e.what();
  }
}

TEST(Startup, BroadcastFromRank0MakesReplicasIdentical) {
  auto& comm = world();
  torch::manual_seed(comm.rank());
  torch::nn::Linear net(5, 4);
  broadcast_from_rank0(comm, net->parameters());
  const auto sums = comm.all_gather(torch::tensor({static_cast<int64_t>(checksum(net->parameters()))}));
  EXPECT_EQ(sums[0].item<int64_t>(), sums[1].item<int64_t>());
}

// NCCL's bootstrap over MPI: rank 0's unique id on every rank. ncclGetUniqueId
// needs no GPU, so this runs for real on CPU machines.
TEST(Startup, NcclUniqueIdOverMpiIsRankZerosOnEveryRank) {
  const auto backends = compiled_backends();
  if (std::find(backends.begin(), backends.end(), "nccl") == backends.end())
    GTEST_SKIP() << "this build has no NCCL backend";
  auto& comm = world();
  auto id = exchange_nccl_id(detect_environment(), &comm, std::chrono::seconds(20));
  ASSERT_EQ(id.size(), 128u);
  const auto bytes = torch::from_blob(id.data(), {128}, torch::kUInt8).clone();
  EXPECT_GT(bytes.count_nonzero().item<int64_t>(), 0) << "an id, not zeros";
  const auto all = comm.all_gather(bytes);
  EXPECT_TRUE(all[0].equal(all[1]));
}

// Fault injection, run by FaultTest in faults_test.cpp as its own mpirun job:
// rank 1 dies (or hangs) while rank 0 keeps reducing.
TEST(Fault, PeerFailsDuringCollectives) {
  const char* fault = std::getenv("ATELIER_TEST_FAULT");
  if (fault == nullptr) GTEST_SKIP() << "run by the fault tests";
  auto comm = make_communicator(detect_environment(), {"mpi", 3});
  for (int i = 0; i < 50; ++i) {
    if (comm->rank() == 1 && i == 5) {
      if (std::string(fault) == "kill") std::raise(SIGKILL);
      std::this_thread::sleep_for(std::chrono::seconds(600));
    }
    auto t = torch::ones({1000});
    comm->all_reduce(t, ReduceOp::Sum);
  }
  FAIL() << "rank " << comm->rank() << " finished although its peer failed";
}

}  // namespace
}  // namespace atelier::comm
