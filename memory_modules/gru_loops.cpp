// The two step loops of memory_modules/gru_sequence.py, for CPU tensors.
//
// Python runs each step as five torch calls; on the small batches of a PPO minibatch
// (16-32 sequences of a 128-wide GRU) the calls' overhead costs more than their work.
// Here a step is the recurrent matmul (one addmm_ into the buffer that holds the
// input projection, as in Python) and one pass over the batch that does every
// elementwise op of the step in registers. Buffers, layouts and gate orders are the
// Python code's, which allocates them, saves them for the backward and does every
// batched op; memory_modules/gru_native.py builds this file and says how.
//
// Every tensor is contiguous (the caller makes sure), float or double.

#include <torch/extension.h>

#include <cmath>

namespace {

// One step's gates for every sequence of the batch: pre [B, 3H] (the r and z
// pre-activations, then W_hn hp + b_hn), gi [B, 3H] (the input projection), h [B, H]
// (the state the step read) -> rz [B, 2H], n [B, H], out [B, H].
template <typename S>
void forward_gates(const S* __restrict pre, const S* __restrict gi, const S* __restrict h,
                   S* __restrict rz, S* __restrict n, S* __restrict out, int64_t B, int64_t H) {
  for (int64_t b = 0; b < B; ++b) {
    const S* p = pre + b * 3 * H;
    const S* gi_n = gi + b * 3 * H + 2 * H;
    const S* hb = h + b * H;
    S* rzb = rz + b * 2 * H;
    S* nb = n + b * H;
    S* ob = out + b * H;
#pragma omp simd
    for (int64_t j = 0; j < 2 * H; ++j) rzb[j] = S(1) / (S(1) + std::exp(-p[j]));
#pragma omp simd
    for (int64_t j = 0; j < H; ++j) {
      const S c = std::tanh(gi_n[j] + rzb[j] * p[2 * H + j]);
      nb[j] = c;
      ob[j] = c + rzb[H + j] * (hb[j] - c);  // lerp(n, h, z)
    }
  }
}

// One step of the backward: g = grad_out_t + keep_{t+1} * carry (the gradient reaching
// the step's output), then d_t [B, 4H] laid out (pn, z, r, hn) as in Python, and carry
// <- g * z (the direct path to hp_t; the caller adds the matmul path).
template <typename S>
void backward_gates(const S* __restrict go, const S* __restrict rz, const S* __restrict n,
                    const S* __restrict pre, const S* __restrict hp, const S* __restrict keep_next,
                    S* __restrict d, S* __restrict carry, int64_t B, int64_t H) {
  for (int64_t b = 0; b < B; ++b) {
    const S* gob = go + b * H;
    const S* r = rz + b * 2 * H;
    const S* z = r + H;
    const S* nb = n + b * H;
    const S* gh_n = pre + b * 3 * H + 2 * H;
    const S* hb = hp + b * H;
    S* db = d + b * 4 * H;
    S* cb = carry + b * H;
    const S k = keep_next ? keep_next[b] : S(1);
#pragma omp simd
    for (int64_t j = 0; j < H; ++j) {
      const S g = gob[j] + k * cb[j];
      const S zz = z[j], nn = nb[j], rr = r[j];
      const S pn = g * (S(1) - zz) * (S(1) - nn * nn);
      db[j] = pn;
      db[H + j] = g * (hb[j] - nn) * zz * (S(1) - zz);
      db[2 * H + j] = pn * gh_n[j] * rr * (S(1) - rr);
      db[3 * H + j] = pn * rr;
      cb[j] = g * zz;
    }
  }
}

// The loops walk raw pointers: a strided view would be read as if it were packed.
void check_packed(const torch::Tensor& t, const char* name) {
  TORCH_CHECK(t.is_contiguous(), "gru_loops: ", name, " must be contiguous (got strides ",
              t.strides(), ")");
}

}  // namespace

// pre [T, B, 3H] (filled as gru_sequence's forward describes), gi [T, B, 3H], h0 [B, H],
// w_hh [3H, H], keep [T, B, 1] or None, hp [T, B, H] (written when keep is given);
// writes rz, n and out.
void forward_loop(torch::Tensor pre, torch::Tensor gi, torch::Tensor h0, torch::Tensor w_hh,
                  c10::optional<torch::Tensor> keep, c10::optional<torch::Tensor> hp,
                  torch::Tensor rz, torch::Tensor n, torch::Tensor out) {
  const int64_t T = pre.size(0), B = pre.size(1), H = w_hh.size(1);
  const auto w_t = w_hh.t();
  for (const auto& [t, name] : {std::pair{&pre, "pre"}, {&gi, "gi"}, {&h0, "h0"}, {&rz, "rz"},
                                {&n, "n"}, {&out, "out"}})
    check_packed(*t, name);
  if (keep) check_packed(*keep, "keep");
  if (hp) check_packed(*hp, "hp");
  AT_DISPATCH_FLOATING_TYPES(pre.scalar_type(), "gru_forward_loop", [&] {
    using S = scalar_t;
    torch::Tensor h = h0;
    for (int64_t t = 0; t < T; ++t) {
      if (keep) {
        auto hp_t = hp->select(0, t);
        at::mul_out(hp_t, h, keep->select(0, t));
        h = hp_t;
      }
      auto pre_t = pre.select(0, t);
      pre_t.addmm_(h, w_t);
      auto out_t = out.select(0, t);
      forward_gates<S>(pre_t.data_ptr<S>(), gi.data_ptr<S>() + t * B * 3 * H, h.data_ptr<S>(),
                       rz.data_ptr<S>() + t * B * 2 * H, n.data_ptr<S>() + t * B * H,
                       out_t.data_ptr<S>(), B, H);
      h = out_t;
    }
  });
}

// grad_out, rz, n, pre, hp as saved by the forward (hp: the state each step read),
// keep [T, B, 1] or None, w_hh_p [3H, H] (rows in gate order z, r, n); fills d
// [T, B, 4H] and returns the gradient of h0.
torch::Tensor backward_loop(torch::Tensor grad_out, torch::Tensor rz, torch::Tensor n,
                            torch::Tensor pre, torch::Tensor hp, c10::optional<torch::Tensor> keep,
                            torch::Tensor w_hh_p, torch::Tensor d) {
  const int64_t T = grad_out.size(0), B = grad_out.size(1), H = n.size(2);
  for (const auto& [t, name] : {std::pair{&grad_out, "grad_out"}, {&rz, "rz"}, {&n, "n"},
                                {&pre, "pre"}, {&hp, "hp"}, {&d, "d"}})
    check_packed(*t, name);
  if (keep) check_packed(*keep, "keep");
  auto carry = torch::zeros({B, H}, grad_out.options());
  AT_DISPATCH_FLOATING_TYPES(grad_out.scalar_type(), "gru_backward_loop", [&] {
    using S = scalar_t;
    S* c = carry.data_ptr<S>();
    const S* keep_p = keep ? keep->data_ptr<S>() : nullptr;
    for (int64_t t = T - 1; t >= 0; --t) {
      const S* keep_next = (keep_p && t + 1 < T) ? keep_p + (t + 1) * B : nullptr;
      backward_gates<S>(grad_out.data_ptr<S>() + t * B * H, rz.data_ptr<S>() + t * B * 2 * H,
                        n.data_ptr<S>() + t * B * H, pre.data_ptr<S>() + t * B * 3 * H,
                        hp.data_ptr<S>() + t * B * H, keep_next, d.data_ptr<S>() + t * B * 4 * H,
                        c, B, H);
      carry.addmm_(d.select(0, t).narrow(1, H, 3 * H), w_hh_p);  // + W_hh^T (z, r, hn grads)
    }
  });
  if (keep) carry.mul_(keep->select(0, 0));
  return carry;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward_loop", &forward_loop, "The GRU scan's forward steps (memory_modules/gru_sequence.py)");
  m.def("backward_loop", &backward_loop, "The GRU scan's backward steps (memory_modules/gru_sequence.py)");
}
