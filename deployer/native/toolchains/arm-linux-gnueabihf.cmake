# Cross toolchain for 32-bit ARM Linux boards with hard float (Debian's g++-arm-linux-gnueabihf).
# Baseline armv7-a + NEON, as ncnn's own arm-linux-gnueabihf toolchain file: ncnn's runtime CPU dispatch adds
# the NEON+VFPv4 (fp16 conversion) kernel variants itself, compiled with -mfpu=neon-vfpv4 -mfp16-format=ieee.
# (A global -mfpu=neon-vfpv4 breaks the build: the base files then see fp16 support without the fp16 format.)
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR armv7-a)
set(CMAKE_C_COMPILER arm-linux-gnueabihf-gcc)
set(CMAKE_CXX_COMPILER arm-linux-gnueabihf-g++)
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_C_FLAGS "-march=armv7-a -mfloat-abi=hard -mfpu=neon")
set(CMAKE_CXX_FLAGS "-march=armv7-a -mfloat-abi=hard -mfpu=neon")
