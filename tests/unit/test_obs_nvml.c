/* obs layer: GPU metrics through NVML loaded at run time, against tests/unit/fake_nvml.c (two
 * devices with known numbers, built as a loadable module, and again as an old driver's library
 * without the optional temperature and power functions): the readings, the exposition lines,
 * and the absent library, missing function and failed nvmlInit cases, which leave the GPU
 * metrics out without an error. */
#include <dlfcn.h>
#include <unistd.h>

#include "kiln/obs.h"
#include "obs/nvml.h"
#include "test.h"

#ifndef KILN_FAKE_NVML
#error "KILN_FAKE_NVML (the path of the fake NVML module) must be defined by the build"
#endif
#ifndef KILN_FAKE_NVML_OLD
#error "KILN_FAKE_NVML_OLD (the fake NVML module without temperature and power) must be defined by the build"
#endif

static int contains(const char *text, const char *part) { return text && strstr(text, part) != NULL; }

static size_t count_of(const char *text, const char *part) {
  size_t n = 0;
  for (const char *p = text; p && (p = strstr(p, part)); p += strlen(part)) n++;
  return n;
}

static char *render_with(const char *library) {
  CHECK(setenv("KILN_NVML_LIBRARY", library, 1) == 0);
  kiln_metrics *r = NULL;
  char *text = NULL;
  size_t len = 0;
  CHECK_OK(kiln_metrics_create(&r));
  kiln_metric *g = kiln_metrics_gauge(r, "kiln_test_gauge", "A family of the registry's own.", 0, NULL);
  kiln_metric_set(g, NULL, 3);
  CHECK_OK(kiln_metrics_render(r, &text, &len));
  CHECK(text && strlen(text) == len);
  kiln_metrics_free(r);
  CHECK(unsetenv("KILN_NVML_LIBRARY") == 0);
  return text;
}

/* stderr into a temporary file while `fn` runs; returns what was written (malloc'd). */
static char *stderr_of(char *(*fn)(const char *), const char *arg, char **result) {
  char path[] = "/tmp/kiln_nvml_XXXXXX";
  int fd = mkstemp(path);
  CHECK(fd >= 0);
  fflush(stderr);
  int saved = dup(STDERR_FILENO);
  CHECK(saved >= 0 && dup2(fd, STDERR_FILENO) == STDERR_FILENO);
  *result = fn(arg);
  fflush(stderr);
  dup2(saved, STDERR_FILENO);
  close(saved);
  char *text = NULL;
  size_t len = 0;
  CHECK_OK(kiln_file_read(path, 0, (void **)&text, &len));
  close(fd);
  unlink(path);
  return text;
}

static void test_readings(void) {
  /* our own reference to the module keeps its counter alive across kx_nvml_close's dlclose */
  void *fake = dlopen(KILN_FAKE_NVML, RTLD_NOW | RTLD_LOCAL);
  CHECK(fake != NULL);
  int (*open_inits)(void) = NULL;
  if (fake) {
    void *f = dlsym(fake, "fake_nvml_open_inits");
    CHECK(f != NULL);
    memcpy(&open_inits, &f, sizeof f);
  }
  kx_nvml *n = NULL;
  CHECK_OK(kx_nvml_open(KILN_FAKE_NVML, &n));
  CHECK(n != NULL);
  if (open_inits) CHECK(open_inits() == 1);
  kx_gpu_reading g[KX_GPU_MAX];
  CHECK(kx_nvml_read(n, g, KX_GPU_MAX) == 2);
  CHECK(g[0].index == 0 && strcmp(g[0].name, "Fake GPU A") == 0);
  CHECK(g[0].has_utilization && g[0].utilization == 0.37);
  CHECK(g[0].has_memory && g[0].memory_used_bytes == 1073741824.0 && g[0].memory_total_bytes == 17179869184.0);
  CHECK(g[1].index == 1 && strcmp(g[1].name, "Fake \"B\" \\ 80GB") == 0);
  CHECK(g[1].has_utilization && g[1].utilization == 1.0);
  CHECK(g[1].has_memory && g[1].memory_used_bytes == 42949672960.0 && g[1].memory_total_bytes == 85899345920.0);
  /* fake_nvml.c: 41 and 83 degrees C, 71500 and 349999 milliwatts */
  CHECK(g[0].has_temperature && g[0].temperature_celsius == 41.0);
  CHECK(g[1].has_temperature && g[1].temperature_celsius == 83.0);
  CHECK(g[0].has_power && g[0].power_watts == 71.5);
  CHECK(g[1].has_power && g[1].power_watts == 349.999);
  /* the caller's array bounds the devices read */
  CHECK(kx_nvml_read(n, g, 1) == 1 && g[0].index == 0);
  CHECK(kx_nvml_read(n, g, 0) == 0);
  /* a reading NVML refuses is marked absent, the others stay */
  CHECK(setenv("FAKE_NVML_NO_UTILIZATION", "1", 1) == 0);
  CHECK(kx_nvml_read(n, g, KX_GPU_MAX) == 2);
  CHECK(g[0].has_utilization && !g[1].has_utilization && g[1].has_memory);
  CHECK(unsetenv("FAKE_NVML_NO_UTILIZATION") == 0);
  CHECK(setenv("FAKE_NVML_NO_TEMPERATURE", "1", 1) == 0);
  CHECK(setenv("FAKE_NVML_NO_POWER", "1", 1) == 0);
  CHECK(kx_nvml_read(n, g, KX_GPU_MAX) == 2);
  CHECK(g[0].has_temperature && g[0].has_power && !g[1].has_temperature && !g[1].has_power);
  CHECK(g[1].has_utilization && g[1].has_memory);
  CHECK(unsetenv("FAKE_NVML_NO_TEMPERATURE") == 0 && unsetenv("FAKE_NVML_NO_POWER") == 0);
  kx_nvml_close(n);
  if (open_inits) CHECK(open_inits() == 0); /* nvmlShutdown balanced nvmlInit_v2 */
  kx_nvml_close(NULL);
  CHECK(kx_nvml_read(NULL, g, KX_GPU_MAX) == 0);
  if (fake) dlclose(fake);
}

/* A library without the optional functions loads; only temperature and power are absent. */
static void test_old_driver(void) {
  kx_nvml *n = NULL;
  CHECK_OK(kx_nvml_open(KILN_FAKE_NVML_OLD, &n));
  CHECK(n != NULL);
  kx_gpu_reading g[KX_GPU_MAX];
  CHECK(kx_nvml_read(n, g, KX_GPU_MAX) == 2);
  for (int i = 0; i < 2; i++) CHECK(g[i].has_utilization && g[i].has_memory && !g[i].has_temperature && !g[i].has_power);
  CHECK(g[0].utilization == 0.37 && g[1].memory_total_bytes == 85899345920.0);
  kx_nvml_close(n);

  char *text = render_with(KILN_FAKE_NVML_OLD);
  CHECK(count_of(text, "\nkiln_gpu_utilization_ratio{") == 2 && count_of(text, "\nkiln_gpu_memory_used_bytes{") == 2);
  CHECK(!contains(text, "kiln_gpu_temperature_celsius") && !contains(text, "kiln_gpu_power_watts"));
  free(text);
}

/* kiln/obs.h's kiln_gpus, as the trainer and the CLI use it: the library from the environment. */
static void test_public_api(void) {
  kiln_gpus *g = (kiln_gpus *)&g;
  CHECK(setenv("KILN_NVML_LIBRARY", "/nonexistent/libnvidia-ml.so.1", 1) == 0);
  CHECK_ERROR(kiln_gpus_open(&g), KILN_UNAVAILABLE, "NVML: cannot load /nonexistent/libnvidia-ml.so.1");
  CHECK(g == NULL);
  CHECK(setenv("KILN_NVML_LIBRARY", KILN_FAKE_NVML, 1) == 0);
  CHECK_OK(kiln_gpus_open(&g));
  kiln_gpu_reading r[KILN_GPU_MAX];
  CHECK(kiln_gpus_read(g, r, KILN_GPU_MAX) == 2 && r[1].index == 1 && r[1].temperature_celsius == 83.0);
  double mean = -1;
  CHECK(kiln_gpus_mean_utilization(g, &mean) == 1 && mean == (0.37 + 1.0) / 2);
  /* a device without a reading is left out of the mean, not counted as idle */
  CHECK(setenv("FAKE_NVML_NO_UTILIZATION", "1", 1) == 0);
  CHECK(kiln_gpus_mean_utilization(g, &mean) == 1 && mean == 0.37);
  CHECK(unsetenv("FAKE_NVML_NO_UTILIZATION") == 0);
  kiln_gpus_close(g);
  kiln_gpus_close(NULL);
  CHECK(kiln_gpus_read(NULL, r, KILN_GPU_MAX) == 0);
  mean = -1;
  CHECK(kiln_gpus_mean_utilization(NULL, &mean) == 0 && mean == -1);
  CHECK(unsetenv("KILN_NVML_LIBRARY") == 0);
}

static void test_open_failures(void) {
  kx_nvml *n = (kx_nvml *)&n;
  CHECK_ERROR(kx_nvml_open("/nonexistent/libnvidia-ml.so.1", &n), KILN_UNAVAILABLE,
              "NVML: cannot load /nonexistent/libnvidia-ml.so.1: ");
  CHECK(n == NULL);
  /* a real library that is not NVML */
  CHECK_ERROR(kx_nvml_open("libm.so.6", &n), KILN_UNAVAILABLE, "NVML: libm.so.6 has no function nvmlInit_v2");
  CHECK(n == NULL);
  /* 9: NVML_ERROR_DRIVER_NOT_LOADED, what a machine with the library and no driver answers */
  CHECK(setenv("FAKE_NVML_INIT_RESULT", "9", 1) == 0);
  CHECK_ERROR(kx_nvml_open(KILN_FAKE_NVML, &n), KILN_UNAVAILABLE, "nvmlInit_v2 in " KILN_FAKE_NVML " returned 9");
  CHECK(n == NULL);
  CHECK(unsetenv("FAKE_NVML_INIT_RESULT") == 0);
  /* NULL path: the environment variable names the library */
  CHECK(setenv("KILN_NVML_LIBRARY", "/nonexistent/other-nvml.so", 1) == 0);
  CHECK_ERROR(kx_nvml_open(NULL, &n), KILN_UNAVAILABLE, "cannot load /nonexistent/other-nvml.so");
  CHECK(unsetenv("KILN_NVML_LIBRARY") == 0);
}

static void test_rendered_lines(void) {
  char *text = render_with(KILN_FAKE_NVML);
  /* expected lines written out by hand from fake_nvml.c's numbers */
  static const char *const lines[] = {
      "# TYPE kiln_gpu_memory_total_bytes gauge\n",
      "\nkiln_gpu_memory_total_bytes{gpu=\"0\",name=\"Fake GPU A\"} 17179869184\n",
      "\nkiln_gpu_memory_total_bytes{gpu=\"1\",name=\"Fake \\\"B\\\" \\\\ 80GB\"} 85899345920\n",
      "# TYPE kiln_gpu_memory_used_bytes gauge\n",
      "\nkiln_gpu_memory_used_bytes{gpu=\"0\",name=\"Fake GPU A\"} 1073741824\n",
      "\nkiln_gpu_memory_used_bytes{gpu=\"1\",name=\"Fake \\\"B\\\" \\\\ 80GB\"} 42949672960\n",
      "# TYPE kiln_gpu_power_watts gauge\n",
      "\nkiln_gpu_power_watts{gpu=\"0\",name=\"Fake GPU A\"} 71.5\n",
      "\nkiln_gpu_power_watts{gpu=\"1\",name=\"Fake \\\"B\\\" \\\\ 80GB\"} 349.999\n",
      "# TYPE kiln_gpu_temperature_celsius gauge\n",
      "\nkiln_gpu_temperature_celsius{gpu=\"0\",name=\"Fake GPU A\"} 41\n",
      "\nkiln_gpu_temperature_celsius{gpu=\"1\",name=\"Fake \\\"B\\\" \\\\ 80GB\"} 83\n",
      "# TYPE kiln_gpu_utilization_ratio gauge\n",
      "\nkiln_gpu_utilization_ratio{gpu=\"0\",name=\"Fake GPU A\"} 0.37\n",
      "\nkiln_gpu_utilization_ratio{gpu=\"1\",name=\"Fake \\\"B\\\" \\\\ 80GB\"} 1\n",
  };
  for (size_t i = 0; i < sizeof lines / sizeof lines[0]; i++) {
    if (!contains(text, lines[i])) fprintf(stderr, "missing: %s", lines[i]);
    CHECK(contains(text, lines[i]));
  }
  CHECK(count_of(text, "# TYPE kiln_gpu_") == 5);
  CHECK(count_of(text, "\nkiln_gpu_") == 10);
  /* sorted by name, as the registry's own families */
  CHECK(strstr(text, "# TYPE kiln_gpu_memory_used_bytes") < strstr(text, "# TYPE kiln_gpu_power_watts") &&
        strstr(text, "# TYPE kiln_gpu_power_watts") < strstr(text, "# TYPE kiln_gpu_temperature_celsius") &&
        strstr(text, "# TYPE kiln_gpu_temperature_celsius") < strstr(text, "# TYPE kiln_gpu_utilization_ratio"));
  CHECK(contains(text, "\nkiln_test_gauge 3\n") && contains(text, "# TYPE process_cpu_seconds_total counter"));
  free(text);

  /* a device without a utilization reading: its line is left out, the family stays */
  CHECK(setenv("FAKE_NVML_NO_UTILIZATION", "1", 1) == 0);
  text = render_with(KILN_FAKE_NVML);
  CHECK(count_of(text, "\nkiln_gpu_utilization_ratio{") == 1 && count_of(text, "\nkiln_gpu_memory_used_bytes{") == 2);
  CHECK(contains(text, "\nkiln_gpu_utilization_ratio{gpu=\"0\",name=\"Fake GPU A\"} 0.37\n"));
  CHECK(unsetenv("FAKE_NVML_NO_UTILIZATION") == 0);
  free(text);

  /* the same for temperature and power */
  CHECK(setenv("FAKE_NVML_NO_TEMPERATURE", "1", 1) == 0 && setenv("FAKE_NVML_NO_POWER", "1", 1) == 0);
  text = render_with(KILN_FAKE_NVML);
  CHECK(count_of(text, "\nkiln_gpu_temperature_celsius{") == 1 && count_of(text, "\nkiln_gpu_power_watts{") == 1);
  CHECK(contains(text, "\nkiln_gpu_temperature_celsius{gpu=\"0\",name=\"Fake GPU A\"} 41\n"));
  CHECK(contains(text, "\nkiln_gpu_power_watts{gpu=\"0\",name=\"Fake GPU A\"} 71.5\n"));
  CHECK(unsetenv("FAKE_NVML_NO_TEMPERATURE") == 0 && unsetenv("FAKE_NVML_NO_POWER") == 0);
  free(text);

  /* the GPU names are the exposition's: the registry refuses them */
  kiln_metrics *r = NULL;
  CHECK_OK(kiln_metrics_create(&r));
  kiln_log_set_level(KILN_LOG_ERROR + 1); /* the refusals are logged; not here */
  CHECK(kiln_metrics_gauge(r, "kiln_gpu_utilization_ratio", "taken", 0, NULL) == NULL);
  CHECK(kiln_metrics_gauge(r, "kiln_gpu_memory_used_bytes", "taken", 0, NULL) == NULL);
  CHECK(kiln_metrics_gauge(r, "kiln_gpu_temperature_celsius", "taken", 0, NULL) == NULL);
  CHECK(kiln_metrics_gauge(r, "kiln_gpu_power_watts", "taken", 0, NULL) == NULL);
  CHECK(kiln_metrics_gauge(r, "process_threads", "taken", 0, NULL) == NULL);
  kiln_log_set_level(KILN_LOG_INFO);
  kiln_metrics_free(r);
}

static void test_absent_library(void) {
  kiln_log_set_level(KILN_LOG_DEBUG);
  char *text = NULL;
  char *log = stderr_of(render_with, "/nonexistent/libnvidia-ml.so.1", &text);
  kiln_log_set_level(KILN_LOG_INFO);
  CHECK(text && !contains(text, "kiln_gpu_"));
  CHECK(contains(text, "\nkiln_test_gauge 3\n") && contains(text, "# TYPE process_threads gauge"));
  /* one debug line, naming the library; nothing louder */
  CHECK(count_of(log, "\n") == 1);
  CHECK(contains(log, "no GPU metrics") && contains(log, "/nonexistent/libnvidia-ml.so.1"));
  CHECK(!contains(log, "\"error\"") && !contains(log, "\"warn\""));
  free(text);
  free(log);

  /* a library whose nvmlInit fails: the same */
  CHECK(setenv("FAKE_NVML_INIT_RESULT", "9", 1) == 0);
  text = render_with(KILN_FAKE_NVML);
  CHECK(text && !contains(text, "kiln_gpu_") && contains(text, "\nkiln_test_gauge 3\n"));
  CHECK(unsetenv("FAKE_NVML_INIT_RESULT") == 0);
  free(text);
}

/* NVML is loaded once per registry, at its first render, not at every scrape. */
static void test_loaded_once(void) {
  CHECK(setenv("KILN_NVML_LIBRARY", "/nonexistent/libnvidia-ml.so.1", 1) == 0);
  kiln_metrics *r = NULL;
  CHECK_OK(kiln_metrics_create(&r));
  char *text = NULL;
  size_t len;
  CHECK_OK(kiln_metrics_render(r, &text, &len));
  free(text);
  /* a library appearing later is not picked up by this registry: the first answer stands */
  CHECK(setenv("KILN_NVML_LIBRARY", KILN_FAKE_NVML, 1) == 0);
  CHECK_OK(kiln_metrics_render(r, &text, &len));
  CHECK(!contains(text, "kiln_gpu_"));
  free(text);
  kiln_metrics_free(r);
  /* and a registry that found it keeps rendering it */
  CHECK_OK(kiln_metrics_create(&r));
  for (int i = 0; i < 3; i++) {
    CHECK_OK(kiln_metrics_render(r, &text, &len));
    CHECK(count_of(text, "\nkiln_gpu_utilization_ratio{") == 2);
    free(text);
  }
  kiln_metrics_free(r);
  CHECK(unsetenv("KILN_NVML_LIBRARY") == 0);
}

TEST_MAIN(TEST(test_readings), TEST(test_old_driver), TEST(test_public_api), TEST(test_open_failures), TEST(test_rendered_lines), TEST(test_absent_library),
          TEST(test_loaded_once))
