// What test/distributed/main.cpp gives the distributed tests: the Runtime it created (MPI under
// mpirun, one rank otherwise) and its world communicator. Every rank runs every test in the
// same order, so a test must start the same collectives on every rank, and must not return
// early (ASSERT_*) on some ranks only before a collective the others will start.
#pragma once

#include "titan/distributed/communicator.h"
#include "titan/distributed/runtime.h"

titan::distributed::Runtime& test_runtime();
titan::distributed::Communicator& test_world();
