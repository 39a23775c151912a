"""Native board runtime: ncnn cross-built with a C++ runner into one static executable per arch.

build.py (cross-build + cache), source.py (the ncnn sdist), runner.cpp (the board side), select.py
(which runtime a board gets), layers.py (per-layer timing report), probe.sh (facts without Python).
"""
