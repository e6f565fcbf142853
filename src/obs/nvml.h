/* Internal: NVIDIA GPU readings through NVML, loaded at run time (no CUDA headers or libraries at
 * build time), for the metrics registry's exposition. */
#ifndef KILN_OBS_NVML_H
#define KILN_OBS_NVML_H

#include "kiln/core.h"

/* The library loaded when $KILN_NVML_LIBRARY is unset or empty: the driver's own. */
#define KX_NVML_DEFAULT_LIBRARY "libnvidia-ml.so.1"
/* Devices read per render; further ones are left out (a node has at most 16 in practice). */
#define KX_GPU_MAX 64
/* NVML_DEVICE_NAME_V2_BUFFER_SIZE: the largest name NVML writes, its NUL included. */
#define KX_GPU_NAME_BYTES 96

typedef struct kx_nvml kx_nvml;

/* One device's numbers; a reading NVML refused (not supported, lost device) is marked absent. */
typedef struct kx_gpu_reading {
  unsigned index;               /* NVML's device index, the `gpu` label */
  char name[KX_GPU_NAME_BYTES]; /* "" when NVML cannot tell it */
  int has_utilization;
  double utilization; /* 0..1: fraction of the last sample period a kernel ran */
  int has_memory;
  double memory_used_bytes;
  double memory_total_bytes;
} kx_gpu_reading;

/* Loads NVML from `path` (NULL: $KILN_NVML_LIBRARY when set and non-empty, else
 * KX_NVML_DEFAULT_LIBRARY), resolves the functions kiln uses and initialises it. An error when the
 * library is absent, lacks a function or nvmlInit_v2 fails: the message names the library and
 * what went wrong (callers treat it as "no GPU", not as a failure). */
kiln_status kx_nvml_open(const char *path, kx_nvml **out);

/* Reads up to `max` devices into `out` (indexes 0..n-1); returns how many, 0 when NVML cannot
 * count them. Thread-safe (NVML's calls are). */
int kx_nvml_read(kx_nvml *n, kx_gpu_reading *out, int max);

/* Shuts NVML down and unloads it. NULL is ignored. */
void kx_nvml_close(kx_nvml *n);

#endif
