// A poll of pending communication from the compute loop. MPI's non-blocking collectives
// move data only while the rank is inside some MPI call (Open MPI has no progress thread
// for them), so an all-gather started ahead of the layer that needs it (FSDP's prefetch)
// would mostly run inside that layer's final wait. A communicator with operations in
// flight installs a poll for its thread; every op dispatch (ops/dispatch.h) calls
// poll_communication(), which runs the calling thread's poll between ops. Per thread, as
// MPI requests are: a thread only tests the operations it started. With nothing installed
// a call is one thread-local load. TITAN_COMM_POLL=0 in the environment turns the polls off
// (tools/bench/fsdp_step.sh measures the FSDP step both ways).
#pragma once

namespace titan {

using CommPoll = void (*)();

// Installs `poll` for the calling thread (null removes it).
void set_comm_poll(CommPoll poll);
// Runs the calling thread's poll, if any.
void poll_communication();
// The calling thread's poll (null: none), for tests.
CommPoll installed_comm_poll();

}  // namespace titan
