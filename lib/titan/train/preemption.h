// Preemption: the signals that ask a training job to stop before its last step, so that it
// saves and a requeued job resumes (docs/checkpoints.md, "Preemption"):
//   SIGUSR1   what Slurm sends ahead of a job's end (#SBATCH --signal=B:USR1@<s>, forwarded
//             to the job step by the batch script) and what mpirun forwards to every rank
//   SIGTERM   what a scheduler sends to stop a job (scancel, preemption), then SIGKILL
// The handler only records the first signal. The trainer (train/trainer.h) looks after each
// step: the ranks agree with one all-reduce (max over the world), so no rank stops alone,
// then it waits for an asynchronous save, writes a checkpoint of that step and returns;
// titan-train exits 0 saying it stopped on the signal at step N. Later signals change
// nothing (a save in progress finishes; files appear only by rename).
//
// Handlers are process-wide and installed by titan-train, not by a Trainer: a library user
// (a test, an embedding program) keeps its own signal dispositions, and its trainers make
// no agreement all-reduce.
#pragma once

namespace titan::train {

// Installs the handlers for SIGUSR1 and SIGTERM (SA_RESTART: a system call the signal
// interrupts is restarted, not failed). Idempotent.
void install_preemption_handlers();
bool preemption_handlers_installed();

// The first stop signal received (SIGUSR1 or SIGTERM), or 0.
int pending_stop_signal();
// Records `signal` as if it had been received (the TITAN_TEST_FAULT hook, tests).
void note_stop_signal(int signal);

// "SIGUSR1", "SIGTERM", or "signal N".
const char* stop_signal_name(int signal);

}  // namespace titan::train
