// Preemption: the signals that ask a training job to stop before its last step, so that it
// saves and a requeued job resumes (docs/checkpoints.md, "Preemption"):
//   SIGUSR1   what Slurm sends ahead of a job's end (#SBATCH --signal=B:USR1@<s>, forwarded
//             to the job step by the batch script) and what mpirun forwards to every rank
//   SIGTERM   what a scheduler sends to stop a job (scancel, preemption), then SIGKILL
// titan-train holds both signals: it blocks them before any other thread starts, so every
// thread (MPI's, OpenMP's, the checkpoint writer's) inherits the mask and the kernel keeps a
// stop signal pending instead of running a handler in the middle of a kernel. That matters:
// oneDNN 2.6's f32 GEMM kernels point rsp into a heap buffer while they run, so a signal
// frame written there corrupts the heap (oneDNN issue 4845; fixed upstream in 2026, not in
// Debian's 2.6). The trainer (train/trainer.h) takes a pending signal after each step: the
// ranks agree with one all-reduce (max over the world), so no rank stops alone, then it
// waits for an asynchronous save, writes a checkpoint of that step and returns; titan-train
// exits 0 saying it stopped on the signal at step N. Later signals change nothing (a save
// in progress finishes; files appear only by rename).
//
// Holding is process-wide and done by titan-train, not by a Trainer: a library user (a test,
// an embedding program) keeps its own signal dispositions, and its trainers make no
// agreement all-reduce.
#pragma once

namespace titan::train {

// Blocks SIGUSR1 and SIGTERM in the calling thread and records them if a thread that
// unblocks them ever receives one (a handler that only stores the signal number). Call it
// first in main(), before MPI_Init or any other thread starts: threads inherit the mask
// when they are created. Idempotent.
void hold_stop_signals();
bool stop_signals_held();

// Takes a stop signal pending for the calling thread or the process, if any, and returns the
// first one received (SIGUSR1 or SIGTERM), or 0. Never waits.
int pending_stop_signal();

// "SIGUSR1", "SIGTERM", or "signal N".
const char* stop_signal_name(int signal);

}  // namespace titan::train
