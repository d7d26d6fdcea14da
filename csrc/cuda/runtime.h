// CUDA entry points callable from bindings.cpp without CUDA headers. Every
// function returns 0 on success or a cudaError_t code; bindings.cpp turns a
// code into a Python RuntimeError via error_string().
#pragma once

#include <cstdint>

namespace fisherprec::cuda {

int device_count(int* count);
const char* error_string(int code);
// Blocks until all work queued on `stream` is done.
int synchronize(uintptr_t stream);

}  // namespace fisherprec::cuda
