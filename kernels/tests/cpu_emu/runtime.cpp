// The launcher of the CPU emulation (see cuda_cpu.h). The CUDA threads of a block are fibers
// (ucontext) on the calling OS thread, switched at __syncthreads and warp shuffles; blocks run
// one after another. One launch at a time (a global lock), since `__shared__` is static storage.
#include "cuda_cpu.h"
#include <algorithm>
#include <mutex>
#include <ucontext.h>
#include <vector>

emu_dim3 threadIdx, blockIdx, blockDim, gridDim;
unsigned char* emu_dyn_smem = nullptr;

namespace {
struct Fiber {
    ucontext_t ctx;
    std::vector<char> stack;
    unsigned tid = 0;
    bool done = false;
};

ucontext_t sched_ctx;
Fiber* cur = nullptr;
void (*g_cb)(void*) = nullptr;
void* g_user = nullptr;

void yield() { swapcontext(&cur->ctx, &sched_ctx); }

// A barrier of fibers; finished fibers drop out (CUDA lets a thread exit while the others
// still synchronize).
struct Bar {
    int expected = 0, count = 0;
    long gen = 0;
    void reset(int n) { expected = n; count = 0; }
    void wait() {
        long g = gen;
        if (++count >= expected) { count = 0; ++gen; return; }
        while (gen == g) yield();
    }
    void drop() {
        --expected;
        if (count > 0 && count >= expected) { count = 0; ++gen; }
    }
};

Bar block_bar;
std::vector<Bar> warp_bars;
std::vector<float> warp_slots;
std::vector<Fiber> fibers;
std::mutex launch_lock;

void fiber_main() {
    g_cb(g_user);
    cur->done = true;
    block_bar.drop();
    warp_bars[cur->tid / 32].drop();
    // returns to sched_ctx through uc_link
}
}  // namespace

void __syncthreads() { block_bar.wait(); }

float __shfl_xor_sync(unsigned, float v, int lane_mask) {
    unsigned t = cur->tid, w = t / 32, lane = t % 32;
    warp_slots[t] = v;
    warp_bars[w].wait();
    float r = warp_slots[w * 32 + (lane ^ (unsigned)lane_mask)];
    warp_bars[w].wait();
    return r;
}

extern "C" void emu_run(unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by,
                        unsigned bz, size_t smem, void (*cb)(void*), void* user) {
    std::lock_guard<std::mutex> guard(launch_lock);
    gridDim = {gx, gy, gz};
    blockDim = {bx, by, bz};
    g_cb = cb;
    g_user = user;
    unsigned n = bx * by * bz, nwarps = (n + 31) / 32;
    std::vector<unsigned char> dyn(smem + 16);
    emu_dyn_smem = dyn.data();
    warp_bars.assign(nwarps, Bar{});
    warp_slots.assign(nwarps * 32, 0.0f);
    if (fibers.size() < n) fibers.resize(n);
    for (unsigned z = 0; z < gz; ++z)
        for (unsigned y = 0; y < gy; ++y)
            for (unsigned x = 0; x < gx; ++x) {
                blockIdx = {x, y, z};
                block_bar.reset((int)n);
                for (unsigned w = 0; w < nwarps; ++w) warp_bars[w].reset((int)std::min(32u, n - 32 * w));
                for (unsigned t = 0; t < n; ++t) {
                    Fiber& f = fibers[t];
                    if (f.stack.empty()) f.stack.resize(256 * 1024);
                    f.tid = t;
                    f.done = false;
                    getcontext(&f.ctx);
                    f.ctx.uc_stack.ss_sp = f.stack.data();
                    f.ctx.uc_stack.ss_size = f.stack.size();
                    f.ctx.uc_link = &sched_ctx;
                    makecontext(&f.ctx, fiber_main, 0);
                }
                unsigned alive = n;
                while (alive > 0) {
                    alive = 0;
                    for (unsigned t = 0; t < n; ++t) {
                        Fiber& f = fibers[t];
                        if (f.done) continue;
                        cur = &f;
                        threadIdx = {t % bx, (t / bx) % by, t / (bx * by)};
                        swapcontext(&sched_ctx, &f.ctx);
                        if (!f.done) ++alive;
                    }
                }
            }
    cur = nullptr;
}
