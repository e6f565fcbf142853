/* GPU utilization, memory, temperature and power through NVML, loaded with dlopen so that kiln
 * builds and runs on machines without NVIDIA's driver; the few NVML types and prototypes used are
 * declared here (NVML's ABI: plain C, these layouts are frozen by the _v2 entry points). */
#include "obs/nvml.h"

#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>

typedef int nvml_return;                /* nvmlReturn_t; NVML_SUCCESS is 0 */
typedef struct nvml_device *nvml_device; /* nvmlDevice_t, opaque */
typedef struct nvml_utilization {       /* nvmlUtilization_t, percent over the last sample period */
  unsigned int gpu;
  unsigned int memory;
} nvml_utilization;
typedef struct nvml_memory { /* nvmlMemory_t (v1), bytes */
  unsigned long long total;
  unsigned long long free;
  unsigned long long used;
} nvml_memory;

#define NVML_SUCCESS 0
/* nvmlTemperatureSensors_t's NVML_TEMPERATURE_GPU: the GPU die's sensor, degrees C */
#define NVML_TEMPERATURE_GPU 0

struct kx_nvml {
  void *library;
  nvml_return (*init)(void);
  nvml_return (*shutdown)(void);
  nvml_return (*device_count)(unsigned int *count);
  nvml_return (*device_handle)(unsigned int index, nvml_device *device);
  nvml_return (*device_name)(nvml_device device, char *name, unsigned int length);
  nvml_return (*utilization)(nvml_device device, nvml_utilization *utilization);
  nvml_return (*memory)(nvml_device device, nvml_memory *memory);
  /* optional (NULL when the library lacks them): an old driver only loses these metrics */
  nvml_return (*temperature)(nvml_device device, int sensor, unsigned int *celsius);
  nvml_return (*power)(nvml_device device, unsigned int *milliwatts);
};

/* dlsym's object pointer as a function pointer: POSIX guarantees the conversion works. */
#define RESOLVE(n, field, symbol)                                                         \
  do {                                                                                    \
    void *address = dlsym((n)->library, symbol);                                          \
    if (!address) {                                                                       \
      missing = symbol;                                                                   \
      goto fail;                                                                          \
    }                                                                                     \
    memcpy(&(n)->field, &address, sizeof address);                                        \
  } while (0)

/* An optional function: left NULL when absent. */
#define RESOLVE_OPTIONAL(n, field, symbol)                                                \
  do {                                                                                    \
    void *address = dlsym((n)->library, symbol);                                          \
    if (address) memcpy(&(n)->field, &address, sizeof address);                           \
  } while (0)

kiln_status kx_nvml_open(const char *path, kx_nvml **out) {
  *out = NULL;
  if (!path) {
    path = getenv("KILN_NVML_LIBRARY");
    if (!path || !*path) path = KX_NVML_DEFAULT_LIBRARY;
  }
  kx_nvml *n = calloc(1, sizeof *n);
  if (!n) return kiln_error(KILN_RESOURCE_EXHAUSTED, "NVML: out of memory");
  n->library = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  if (!n->library) {
    const char *why = dlerror();
    free(n);
    return kiln_error(KILN_UNAVAILABLE, "NVML: cannot load %s: %s", path, why ? why : "unknown reason");
  }
  const char *missing = NULL;
  _Static_assert(sizeof(void *) == sizeof n->init, "function and object pointers differ in size");
  RESOLVE(n, init, "nvmlInit_v2");
  RESOLVE(n, shutdown, "nvmlShutdown");
  RESOLVE(n, device_count, "nvmlDeviceGetCount_v2");
  RESOLVE(n, device_handle, "nvmlDeviceGetHandleByIndex_v2");
  RESOLVE(n, device_name, "nvmlDeviceGetName");
  RESOLVE(n, utilization, "nvmlDeviceGetUtilizationRates");
  RESOLVE(n, memory, "nvmlDeviceGetMemoryInfo");
  RESOLVE_OPTIONAL(n, temperature, "nvmlDeviceGetTemperature");
  RESOLVE_OPTIONAL(n, power, "nvmlDeviceGetPowerUsage");
  nvml_return r = n->init();
  if (r != NVML_SUCCESS) {
    dlclose(n->library);
    free(n);
    return kiln_error(KILN_UNAVAILABLE, "NVML: nvmlInit_v2 in %s returned %d (expected 0, NVML_SUCCESS)", path, r);
  }
  *out = n;
  return NULL;
fail:
  dlclose(n->library);
  free(n);
  return kiln_error(KILN_UNAVAILABLE, "NVML: %s has no function %s (expected NVML 5 or later)", path, missing);
}

int kx_nvml_read(kx_nvml *n, kx_gpu_reading *out, int max) {
  unsigned int count = 0;
  if (!n || max <= 0 || n->device_count(&count) != NVML_SUCCESS) return 0;
  if (count > (unsigned)max) count = (unsigned)max;
  int got = 0;
  for (unsigned int i = 0; i < count; i++) {
    nvml_device device = NULL;
    if (n->device_handle(i, &device) != NVML_SUCCESS) continue; /* lost or not ours to see */
    kx_gpu_reading *g = &out[got++];
    memset(g, 0, sizeof *g);
    g->index = i;
    /* a library that fills the whole buffer without a terminator must not run us off its end */
    if (n->device_name(device, g->name, (unsigned)sizeof g->name) != NVML_SUCCESS) g->name[0] = '\0';
    g->name[sizeof g->name - 1] = '\0';
    nvml_utilization u;
    if (n->utilization(device, &u) == NVML_SUCCESS) {
      g->has_utilization = 1;
      g->utilization = u.gpu / 100.0;
    }
    nvml_memory m;
    if (n->memory(device, &m) == NVML_SUCCESS) {
      g->has_memory = 1;
      g->memory_used_bytes = (double)m.used;
      g->memory_total_bytes = (double)m.total;
    }
    unsigned int celsius = 0, milliwatts = 0;
    if (n->temperature && n->temperature(device, NVML_TEMPERATURE_GPU, &celsius) == NVML_SUCCESS) {
      g->has_temperature = 1;
      g->temperature_celsius = (double)celsius;
    }
    if (n->power && n->power(device, &milliwatts) == NVML_SUCCESS) {
      g->has_power = 1;
      g->power_watts = milliwatts / 1000.0;
    }
  }
  return got;
}

void kx_nvml_close(kx_nvml *n) {
  if (!n) return;
  n->shutdown(); /* balances our nvmlInit_v2; NVML counts them, other users keep theirs */
  dlclose(n->library);
  free(n);
}

/* ---------------------------------------------------------------- kiln/obs.h's kiln_gpus */

struct kiln_gpus {
  kx_nvml *nvml;
};

kiln_status kiln_gpus_open(kiln_gpus **out) {
  *out = NULL;
  kiln_gpus *g = calloc(1, sizeof *g);
  if (!g) return kiln_error(KILN_RESOURCE_EXHAUSTED, "NVML: out of memory");
  kiln_status s = kx_nvml_open(NULL, &g->nvml);
  if (s) {
    free(g);
    return s;
  }
  *out = g;
  return NULL;
}

int kiln_gpus_read(kiln_gpus *g, kiln_gpu_reading *out, int max) { return g ? kx_nvml_read(g->nvml, out, max) : 0; }

int kiln_gpus_mean_utilization(kiln_gpus *g, double *mean) {
  kiln_gpu_reading gpus[KILN_GPU_MAX];
  int n = kiln_gpus_read(g, gpus, KILN_GPU_MAX), reported = 0;
  double sum = 0;
  for (int i = 0; i < n; i++) {
    if (!gpus[i].has_utilization) continue;
    sum += gpus[i].utilization;
    reported++;
  }
  if (reported == 0) return 0;
  *mean = sum / reported;
  return 1;
}

void kiln_gpus_close(kiln_gpus *g) {
  if (!g) return;
  kx_nvml_close(g->nvml);
  free(g);
}
