// Multi-tensor launches: many tensors, one kernel launch per batch of up to
// kMaxTensors tensors / kMaxBlocks chunks. The table travels as a kernel
// argument (no host-to-device copy), as in torch's fused optimizers. A kernel
// reads, for its block, which tensor and which chunk it owns.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <vector>

namespace fisherprec::cuda {

constexpr int kMaxTensors = 36;
constexpr int kMaxBlocks = 320;
constexpr int64_t kChunkElems = 65536;
constexpr int kThreads = 512;

// Depth = how many aligned buffers each tensor contributes (param, grad, m, v…).
template <int Depth>
struct TensorTable {
  void* ptr[Depth][kMaxTensors];
  int64_t numel[kMaxTensors];
  unsigned char block_tensor[kMaxBlocks];
  int block_chunk[kMaxBlocks];
};

// Calls launch(table, num_blocks) for successive batches; `ptrs[d][t]` is
// buffer d of tensor t. Returns the first CUDA error, or 0.
template <int Depth, class Launch>
int multi_tensor_apply(const std::vector<uintptr_t> (&ptrs)[Depth], const std::vector<int64_t>& numels,
                       Launch&& launch) {
  TensorTable<Depth> table{};
  int tensors = 0, blocks = 0;
  auto flush = [&]() -> int {
    if (blocks == 0) return 0;
    launch(table, blocks);
    const int err = static_cast<int>(cudaGetLastError());
    tensors = blocks = 0;
    return err;
  };
  for (size_t t = 0; t < numels.size(); ++t) {
    if (numels[t] == 0) continue;
    for (int d = 0; d < Depth; ++d) table.ptr[d][tensors] = reinterpret_cast<void*>(ptrs[d][t]);
    table.numel[tensors] = numels[t];
    const int64_t chunks = (numels[t] + kChunkElems - 1) / kChunkElems;
    for (int64_t c = 0; c < chunks; ++c) {
      table.block_tensor[blocks] = static_cast<unsigned char>(tensors);
      table.block_chunk[blocks] = static_cast<int>(c);
      ++blocks;
      const bool last_chunk = c + 1 == chunks;
      if (blocks == kMaxBlocks || (last_chunk && tensors + 1 == kMaxTensors)) {
        // A tensor cut mid-way restarts in the next batch at the same slot 0.
        const int carried = last_chunk ? 0 : 1;
        if (int err = flush()) return err;
        if (carried) {
          for (int d = 0; d < Depth; ++d) table.ptr[d][0] = reinterpret_cast<void*>(ptrs[d][t]);
          table.numel[0] = numels[t];
        }
        tensors = 0;
        if (!carried) tensors = -1;  // incremented below to 0
      }
    }
    ++tensors;
  }
  return flush();
}

}  // namespace fisherprec::cuda
