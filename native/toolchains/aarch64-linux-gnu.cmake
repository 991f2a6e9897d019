# Example CMake toolchain file: build nar-tvm-runner for 64-bit ARM Linux (boards, phones
# with a Linux userland, Graviton servers) on an x86_64 host with the GNU cross toolchain
# (Debian/Ubuntu: apt-get install g++-aarch64-linux-gnu).
#
#   cmake -S . -B build-aarch64 \
#     -DCMAKE_TOOLCHAIN_FILE=native/toolchains/aarch64-linux-gnu.cmake \
#     -DNAR_TVM_FFI_INCLUDE_DIR=$(python -c 'import tvm_ffi.libinfo as l; print(l.find_include_path())') \
#     -DNAR_TVM_DLPACK_INCLUDE_DIR=$(python -c 'import tvm_ffi.libinfo as l; print(l.find_dlpack_include_path())') \
#     -DNAR_TVM_FFI_LIBRARY=$DEVICE_LIBS/libtvm_ffi.so \
#     -DNAR_TVM_RUNTIME_LIBRARY=$DEVICE_LIBS/libtvm_runtime.so \
#     -DNAR_TVM_RPATH_WHEELS=OFF
#   cmake --build build-aarch64 -j2
#
# The headers are architecture-independent (the wheel's are fine); the two libraries must
# be aarch64 builds of the same TVM / tvm-ffi versions (native/README.md).
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)

set(NAR_TVM_CROSS_PREFIX "aarch64-linux-gnu-" CACHE STRING "cross toolchain prefix")
set(CMAKE_C_COMPILER "${NAR_TVM_CROSS_PREFIX}gcc")
set(CMAKE_CXX_COMPILER "${NAR_TVM_CROSS_PREFIX}g++")

# Optional sysroot with the device's libc/libstdc++ (e.g. from the board's image).
if(DEFINED ENV{NAR_TVM_SYSROOT})
  set(CMAKE_SYSROOT "$ENV{NAR_TVM_SYSROOT}")
endif()

# Programs come from the host, libraries and headers from the target only.
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)
