# Every dependency is the real library, found the Debian way. Optional backends honour
# TITAN_<X> = AUTO (use if found) | ON (fail if missing) | OFF (do not look).
find_package(PkgConfig REQUIRED)
find_package(OpenMP REQUIRED COMPONENTS CXX)
# OpenBLAS in its OpenMP flavour (Debian's libopenblas-openmp-dev): its threads are the
# engine's OpenMP threads. The pthread flavour (the default alternative) keeps a second pool
# that fights the OpenMP threads spinning between our parallel loops: measured 6.3 s
# instead of 0.47 s for three tiny training steps on 2 cores.
pkg_check_modules(OPENBLAS REQUIRED openblas)
set(TITAN_OPENBLAS_VERSION ${OPENBLAS_VERSION})
find_library(TITAN_OPENBLAS_OPENMP_LIBRARY openblas
             PATHS /usr/lib/${CMAKE_LIBRARY_ARCHITECTURE}/openblas-openmp NO_DEFAULT_PATH)
find_path(TITAN_OPENBLAS_OPENMP_INCLUDE cblas.h
          PATHS /usr/include/${CMAKE_LIBRARY_ARCHITECTURE}/openblas-openmp NO_DEFAULT_PATH)
add_library(titan_openblas INTERFACE)
if(TITAN_OPENBLAS_OPENMP_LIBRARY AND TITAN_OPENBLAS_OPENMP_INCLUDE)
  target_include_directories(titan_openblas INTERFACE ${TITAN_OPENBLAS_OPENMP_INCLUDE})
  target_link_libraries(titan_openblas INTERFACE ${TITAN_OPENBLAS_OPENMP_LIBRARY})
  set(TITAN_OPENBLAS_FLAVOUR openmp)
else()
  message(WARNING "OpenBLAS's OpenMP flavour (libopenblas-openmp-dev) not found; the pthread "
                  "flavour's threads will compete with the engine's (tools/setup.sh installs it)")
  pkg_check_modules(OPENBLAS_PTHREAD REQUIRED IMPORTED_TARGET openblas)
  target_link_libraries(titan_openblas INTERFACE PkgConfig::OPENBLAS_PTHREAD)
  set(TITAN_OPENBLAS_FLAVOUR pthread)
endif()
# oneDNN (Debian's libdnnl-dev, the CPU library PyTorch uses): the CPU GEMM when found
# (ops/cpu/matmul.cpp), OpenBLAS otherwise. It picks its kernels by the CPU's ISA itself, and
# runs on the engine's OpenMP threads. TITAN_DNNL=OFF leaves it out: the GPU-check bundle
# does, whose 64 MiB carry its 40 MB library would break.
set(TITAN_DNNL AUTO CACHE STRING "oneDNN for the CPU GEMMs: AUTO, ON or OFF")
set_property(CACHE TITAN_DNNL PROPERTY STRINGS AUTO ON OFF)
set(TITAN_HAVE_DNNL 0)
set(TITAN_DNNL_VERSION "")
add_library(titan_dnnl INTERFACE)
if(NOT TITAN_DNNL STREQUAL "OFF")
  find_package(dnnl CONFIG QUIET)
  if(dnnl_FOUND)
    set(TITAN_HAVE_DNNL 1)
    set(TITAN_DNNL_VERSION ${dnnl_VERSION})
    target_link_libraries(titan_dnnl INTERFACE DNNL::dnnl)
  elseif(TITAN_DNNL STREQUAL "ON")
    message(FATAL_ERROR "TITAN_DNNL=ON, but CMake found no oneDNN (apt-get install libdnnl-dev; "
                        "tools/setup.sh installs it)")
  endif()
endif()
# TITAN_STATIC_DEPS links the small Debian libraries from their static archives, so the
# GPU-check build's binaries run on a machine without them (tools/device/, notes in
# docs/building.md). OpenBLAS stays shared: the bundle script carries its .so.
option(TITAN_STATIC_DEPS "link yaml-cpp, Boost.Program_options and PCRE2 statically" OFF)
if(TITAN_STATIC_DEPS)
  set(Boost_USE_STATIC_LIBS ON)
endif()
find_package(yaml-cpp REQUIRED)
find_package(Boost REQUIRED COMPONENTS program_options)
pkg_check_modules(PCRE2 REQUIRED IMPORTED_TARGET libpcre2-8)
find_package(nlohmann_json REQUIRED)   # header-only: safetensors headers, JSON files
if(TITAN_STATIC_DEPS)
  find_library(TITAN_YAML_CPP_STATIC NAMES libyaml-cpp.a REQUIRED)
  set_target_properties(yaml-cpp PROPERTIES IMPORTED_LOCATION ${TITAN_YAML_CPP_STATIC})
  get_target_property(configs yaml-cpp IMPORTED_CONFIGURATIONS)
  foreach(config IN LISTS configs)
    set_target_properties(yaml-cpp PROPERTIES IMPORTED_LOCATION_${config} ${TITAN_YAML_CPP_STATIC})
  endforeach()
  find_library(TITAN_PCRE2_STATIC NAMES libpcre2-8.a HINTS ${PCRE2_LIBRARY_DIRS} REQUIRED)
  set_target_properties(PkgConfig::PCRE2 PROPERTIES INTERFACE_LINK_LIBRARIES ${TITAN_PCRE2_STATIC})
  message(STATUS "titan: static yaml-cpp (${TITAN_YAML_CPP_STATIC}), Boost, PCRE2 (${TITAN_PCRE2_STATIC})")
endif()

macro(titan_option_result opt found what)
  if(${opt} STREQUAL "ON" AND NOT ${found})
    message(FATAL_ERROR "${opt}=ON but ${what} was not found (tools/setup.sh installs it)")
  endif()
endmacro()

# --- MPI -------------------------------------------------------------------------------
set(TITAN_HAVE_MPI 0)
if(NOT TITAN_MPI STREQUAL "OFF")
  find_package(MPI COMPONENTS CXX)
  titan_option_result(TITAN_MPI MPI_CXX_FOUND "MPI (libopenmpi-dev)")
  if(MPI_CXX_FOUND)
    set(TITAN_HAVE_MPI 1)
  endif()
endif()

# --- parallel HDF5 ---------------------------------------------------------------------
# Checkpoints are written collectively, so HDF5 is used only in its parallel flavour.
set(TITAN_HAVE_HDF5 0)
set(TITAN_HDF5_PARALLEL 0)
if(NOT TITAN_HDF5 STREQUAL "OFF")
  if(NOT TITAN_HAVE_MPI)
    titan_option_result(TITAN_HDF5 FALSE "MPI, which parallel HDF5 needs,")
  else()
    pkg_check_modules(HDF5P IMPORTED_TARGET hdf5-openmpi)
    if(NOT HDF5P_FOUND)
      set(HDF5_PREFER_PARALLEL TRUE)
      find_package(HDF5 COMPONENTS C)
      if(HDF5_FOUND AND HDF5_IS_PARALLEL)
        add_library(titan_hdf5 INTERFACE)
        target_include_directories(titan_hdf5 INTERFACE ${HDF5_C_INCLUDE_DIRS})
        target_link_libraries(titan_hdf5 INTERFACE ${HDF5_C_LIBRARIES})
        set(HDF5P_FOUND 1)
        set(HDF5P_VERSION ${HDF5_VERSION})
      endif()
    else()
      add_library(titan_hdf5 INTERFACE)
      target_link_libraries(titan_hdf5 INTERFACE PkgConfig::HDF5P)
    endif()
    titan_option_result(TITAN_HDF5 HDF5P_FOUND "parallel HDF5 (libhdf5-openmpi-dev)")
    if(HDF5P_FOUND)
      set(TITAN_HAVE_HDF5 1)
      set(TITAN_HDF5_PARALLEL 1)
    endif()
  endif()
endif()

# --- CUDA, cuBLASLt, NCCL --------------------------------------------------------------
set(TITAN_HAVE_CUDA 0)
set(TITAN_HAVE_NCCL 0)
if(NOT TITAN_CUDA STREQUAL "OFF")
  include(CheckLanguage)
  check_language(CUDA)
  titan_option_result(TITAN_CUDA CMAKE_CUDA_COMPILER "a CUDA compiler (/usr/local/cuda/bin/nvcc)")
  if(CMAKE_CUDA_COMPILER)
    if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
      set(CMAKE_CUDA_ARCHITECTURES 80 90)   # A100; H100 / H200 (WMMA runs on both)
    endif()
    set(CMAKE_CUDA_STANDARD 17)  # CMake 3.25 knows no CUDA20 flags for nvcc
    # One CUDA runtime, the shared one that CUDA::cudart names too (nvcc's default is the
    # static libcudart, which would give a binary two copies of the runtime's state). The
    # GPU machine's toolkit serves it; the bundle script never carries it.
    set(CMAKE_CUDA_RUNTIME_LIBRARY Shared)
    enable_language(CUDA)
    find_package(CUDAToolkit REQUIRED)
    set(TITAN_HAVE_CUDA 1)
    find_path(NCCL_INCLUDE_DIR nccl.h HINTS ${CUDAToolkit_INCLUDE_DIRS})
    find_library(NCCL_LIBRARY nccl HINTS ${CUDAToolkit_LIBRARY_DIR})
    if(NCCL_INCLUDE_DIR AND NCCL_LIBRARY)
      set(TITAN_HAVE_NCCL 1)
      add_library(titan_nccl INTERFACE)
      target_include_directories(titan_nccl INTERFACE ${NCCL_INCLUDE_DIR})
      target_link_libraries(titan_nccl INTERFACE ${NCCL_LIBRARY})
    endif()
  endif()
endif()

if(TITAN_BUILD_TESTS)
  find_package(GTest REQUIRED)
endif()
