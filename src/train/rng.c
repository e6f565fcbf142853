/* The trainer's random numbers: splitmix64, whose whole state is one word a checkpoint saves. */
#include "train/train.h"

uint64_t kx_rng_next(kx_rng *r) {
  uint64_t z = (r->state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

float kx_rng_uniform(kx_rng *r) { return (float)(kx_rng_next(r) >> 40) * (1.0f / 16777216.0f); }
