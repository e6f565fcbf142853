/* Internal: NVIDIA GPU readings through NVML, loaded at run time (no CUDA headers or libraries at
 * build time), for the metrics registry's exposition and kiln/obs.h's kiln_gpus. */
#ifndef KILN_OBS_NVML_H
#define KILN_OBS_NVML_H

#include "kiln/obs.h"

/* The library loaded when $KILN_NVML_LIBRARY is unset or empty: the driver's own. */
#define KX_NVML_DEFAULT_LIBRARY "libnvidia-ml.so.1"
/* Devices read per render, and the name's size: kiln/obs.h's. */
#define KX_GPU_MAX KILN_GPU_MAX
#define KX_GPU_NAME_BYTES KILN_GPU_NAME_BYTES

typedef struct kx_nvml kx_nvml;

/* One device's numbers (kiln/obs.h's kiln_gpu_reading). */
typedef kiln_gpu_reading kx_gpu_reading;

/* Loads NVML from `path` (NULL: $KILN_NVML_LIBRARY when set and non-empty, else
 * KX_NVML_DEFAULT_LIBRARY), resolves the functions kiln uses and initialises it. An error when the
 * library is absent, lacks a required function or nvmlInit_v2 fails: the message names the library
 * and what went wrong (callers treat it as "no GPU", not as a failure). nvmlDeviceGetTemperature
 * and nvmlDeviceGetPowerUsage are optional: an older library without them only lacks those readings. */
kiln_status kx_nvml_open(const char *path, kx_nvml **out);

/* Reads up to `max` devices into `out` (indexes 0..n-1); returns how many, 0 when NVML cannot
 * count them. Thread-safe (NVML's calls are). */
int kx_nvml_read(kx_nvml *n, kx_gpu_reading *out, int max);

/* Shuts NVML down and unloads it. NULL is ignored. */
void kx_nvml_close(kx_nvml *n);

#endif
