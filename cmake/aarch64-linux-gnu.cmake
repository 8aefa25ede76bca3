# aarch64-linux-gnu.cmake: CMake toolchain file that cross-builds the C core for 64-bit ARM Linux with the GNU
# cross compiler (Debian/Ubuntu: gcc-aarch64-linux-gnu); ctest runs the test program under qemu-user.
# Used by .ci/aarch64.sh:  cmake -S . -B build/aarch64 -DCMAKE_TOOLCHAIN_FILE=cmake/aarch64-linux-gnu.cmake
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(ADAM_C_CROSS_PREFIX aarch64-linux-gnu CACHE STRING "prefix of the cross tools (<prefix>-gcc) and sysroot name")
set(CMAKE_C_COMPILER ${ADAM_C_CROSS_PREFIX}-gcc)
# the cross toolchain's libraries and headers, never the build machine's; programs (cmake, python) from the host
set(CMAKE_FIND_ROOT_PATH /usr/${ADAM_C_CROSS_PREFIX})
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)
# qemu-user runs the aarch64 programs (ctest, try_run); -L: where the aarch64 dynamic loader and libc live
find_program(ADAM_C_QEMU_AARCH64 NAMES qemu-aarch64 qemu-aarch64-static)
if(ADAM_C_QEMU_AARCH64)
  set(CMAKE_CROSSCOMPILING_EMULATOR ${ADAM_C_QEMU_AARCH64} -L /usr/${ADAM_C_CROSS_PREFIX})
endif()
