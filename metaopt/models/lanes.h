// Vectors in the CPU's own width for metaopt's CPU kernels (fused_block.cpp, thin_conv.cpp).
#pragma once
#include <cstdint>
#include <cstring>
#include <type_traits>

namespace metaopt {

// Vectors of T in the CPU's own width (GCC's and Clang's vector extension), their comparisons' integer lanes, and as
// many bytes (`which`), for the loops the compiler would not vectorise on its own: the sums along a plane (it may not
// reassociate them) and the selects across a window's channels. In the CPU's width: GCC kept the sums of vectors
// wider than the CPU's on the stack and ran their comparisons lane by lane with a branch each; under AVX2 that made
// the channels-last backward 9x and the NCHW forward 2.6x slower (measured; AVX-512 hid it).
#if defined(__AVX512F__)
constexpr int kNativeBytes = 64;
#elif defined(__AVX__)
constexpr int kNativeBytes = 32;
#else
constexpr int kNativeBytes = 16;
#endif

template <typename T, int Bytes>
struct Vec {
  using I = std::conditional_t<sizeof(T) == 4, int32_t, int64_t>;
  typedef T type __attribute__((vector_size(Bytes)));
  typedef I mask __attribute__((vector_size(Bytes)));
  typedef uint8_t bytes __attribute__((vector_size(Bytes / sizeof(T))));
  static constexpr int64_t size = Bytes / sizeof(T);
};
template <typename T>
using Lanes = Vec<T, kNativeBytes>;

template <typename V, typename P>
inline V load(const P* p) {
  V v;
  std::memcpy(&v, p, sizeof(V));
  return v;
}

template <typename V, typename P>
inline void store(P* p, const V& v) {
  std::memcpy(p, &v, sizeof(V));
}

// mask ? a : b, lane by lane (mask: a comparison's lanes, all ones or zero), as bitwise operations.
template <typename T>
inline typename Lanes<T>::type pick(typename Lanes<T>::mask mask, typename Lanes<T>::type a,
                                     typename Lanes<T>::type b) {
  using M = typename Lanes<T>::mask;
  using V = typename Lanes<T>::type;
  return (V)(((M)a & mask) | ((M)b & ~mask));
}

// `which` at c .. c + L as integer lanes.
template <typename T>
inline typename Lanes<T>::mask lanes_of(const uint8_t* which) {
  return __builtin_convertvector(load<typename Lanes<T>::bytes>(which), typename Lanes<T>::mask);
}

}  // namespace metaopt
