/* The image folder source (Keras' image_dataset_from_directory layout, root/<class>/<name>.jpg|jpeg|png):
 * one record per image file with its encoded bytes, its class index and its path. Decoding is a
 * later, parallel map stage; this source only reads files in a deterministic order. */
#include "data/data.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

/* Larger files are bad records rather than allocations: no real training image comes near. */
#define MAX_IMAGE_BYTES ((int64_t)64 << 20)
#define VALUE_ALIGN 16

static const char *const record_names[] = {"image", "label", "path"};

/* One image: its path from the working directory (the record's source) and from the root. */
typedef struct image_file {
  char *path;
  const char *relative; /* points into path */
  int64_t label;
} image_file;

typedef struct images_source {
  kx_stage base;
  char *root;
  int decode;
  int channels;
  char **classes;
  int n_classes;
  image_file *files;
  size_t n_files;
  size_t cap_files;
  size_t next; /* the next file's ordinal */
} images_source;

static const kx_stage_ops images_ops;

static int compare_strings(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

static int compare_files(const void *a, const void *b) {
  const image_file *x = a, *y = b;
  if (x->label != y->label) return x->label < y->label ? -1 : 1;
  return strcmp(x->relative, y->relative);
}

static int is_image_name(const char *name) {
  const char *dot = strrchr(name, '.');
  return dot && dot != name &&
         (strcasecmp(dot, ".jpg") == 0 || strcasecmp(dot, ".jpeg") == 0 || strcasecmp(dot, ".png") == 0);
}

/* "root/a/b" in a fresh allocation. */
static char *join(const char *a, const char *b, const char *c) {
  size_t n = strlen(a) + strlen(b) + (c ? strlen(c) + 1 : 0) + 2;
  char *p = malloc(n);
  if (!p) return NULL;
  if (c) snprintf(p, n, "%s/%s/%s", a, b, c);
  else snprintf(p, n, "%s/%s", a, b);
  return p;
}

static kiln_status list_classes(images_source *s, size_t *others) {
  DIR *dir = opendir(s->root);
  if (!dir)
    return kiln_error(errno == ENOENT ? KILN_NOT_FOUND : KILN_IO, "image folder %s: cannot open: %s", s->root,
                      strerror(errno));
  kiln_status e = NULL;
  int cap = 0;
  struct dirent *d;
  while (!e && (d = readdir(dir))) {
    if (d->d_name[0] == '.') continue; /* ".", "..", and hidden folders such as .ipynb_checkpoints */
    char *path = join(s->root, d->d_name, NULL);
    struct stat st;
    if (!path) {
      e = kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
    } else if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
      if (s->n_classes == cap) {
        if (cap > (1 << 24)) {
          e = kiln_error(KILN_RESOURCE_EXHAUSTED, "image folder %s: more than %d class folders", s->root, cap);
        } else {
          int grown = cap ? cap * 2 : 16;
          char **c = realloc(s->classes, (size_t)grown * sizeof *c);
          if (!c) e = kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
          else s->classes = c, cap = grown;
        }
      }
      if (!e && !(s->classes[s->n_classes] = strdup(d->d_name))) e = kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
      if (!e) s->n_classes++;
    } else {
      (*others)++;
    }
    free(path);
  }
  closedir(dir);
  if (e) return e;
  if (s->n_classes == 0)
    return kiln_error(KILN_INVALID_ARGUMENT,
                      "image folder %s has no class folders (expected %s/<class>/*.jpg|jpeg|png, as Keras' "
                      "image_dataset_from_directory reads)",
                      s->root, s->root);
  qsort(s->classes, (size_t)s->n_classes, sizeof *s->classes, compare_strings);
  return NULL;
}

static kiln_status add_file(images_source *s, int label, const char *name) {
  if (s->n_files == s->cap_files) {
    size_t grown = s->cap_files ? s->cap_files * 2 : 256;
    image_file *f = realloc(s->files, grown * sizeof *f);
    if (!f) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory listing %zu images", s->n_files);
    s->files = f;
    s->cap_files = grown;
  }
  char *path = join(s->root, s->classes[label], name);
  if (!path) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  s->files[s->n_files++] = (image_file){path, path + strlen(s->root) + 1, label};
  return NULL;
}

/* Lists each class folder's images; files are not opened (a folder of millions lists fast), so an
 * unreadable one becomes a bad record when its turn comes. */
static kiln_status list_files(images_source *s, size_t *others) {
  for (int c = 0; c < s->n_classes; c++) {
    char *path = join(s->root, s->classes[c], NULL);
    if (!path) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
    DIR *dir = opendir(path);
    if (!dir) {
      kiln_status e = kiln_error(KILN_IO, "image folder %s: cannot open class folder %s: %s", s->root, path,
                                 strerror(errno));
      free(path);
      return e;
    }
    free(path);
    kiln_status e = NULL;
    struct dirent *d;
    while (!e && (d = readdir(dir))) {
      if (strcmp(d->d_name, ".") == 0 || strcmp(d->d_name, "..") == 0) continue;
      if (is_image_name(d->d_name)) e = add_file(s, c, d->d_name);
      else (*others)++;
    }
    closedir(dir);
    if (e) return e;
  }
  if (s->n_files > 1) qsort(s->files, s->n_files, sizeof *s->files, compare_files);
  return NULL;
}

/* Reads the whole file into a record of image, label and path. An error is the record's fault. */
static kiln_status read_image(const image_file *f, kiln_record *out) {
  int fd = open(f->path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return kiln_error(KILN_INVALID_ARGUMENT, "cannot open the image: %s", strerror(errno));
  struct stat st;
  kiln_status e = NULL;
  if (fstat(fd, &st) != 0) {
    e = kiln_error(KILN_INVALID_ARGUMENT, "cannot stat the image: %s", strerror(errno));
  } else if (!S_ISREG(st.st_mode)) {
    e = kiln_error(KILN_INVALID_ARGUMENT, "not a regular file");
  } else if (st.st_size > MAX_IMAGE_BYTES) {
    e = kiln_error(KILN_INVALID_ARGUMENT, "the file has %lld bytes, more than the %lld MiB an image may have",
                   (long long)st.st_size, (long long)(MAX_IMAGE_BYTES >> 20));
  }
  if (e) {
    close(fd);
    return e;
  }
  size_t size = (size_t)st.st_size, rel = strlen(f->relative) + 1;
  size_t image_bytes = (size + VALUE_ALIGN - 1) / VALUE_ALIGN * VALUE_ALIGN;
  void *data;
  e = kiln_record_init(out, record_names, 3, image_bytes + sizeof(int64_t) + sizeof(char *) + rel, &data);
  if (e) {
    close(fd);
    return e;
  }
  uint8_t *image = data;
  int64_t *label = (int64_t *)(void *)(image + image_bytes);
  char **path = (char **)(void *)(label + 1);
  char *text = (char *)(path + 1);
  size_t got = 0;
  while (got < size) {
    ssize_t r = read(fd, image + got, size - got);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) {
      e = r < 0 ? kiln_error(KILN_INVALID_ARGUMENT, "read failed: %s", strerror(errno))
                : kiln_error(KILN_INVALID_ARGUMENT, "the file shrank from %zu to %zu bytes while it was read", size, got);
      break;
    }
    got += (size_t)r;
  }
  close(fd);
  if (e) {
    kiln_record_release(out);
    return e;
  }
  /* set_shape cannot fail here: ranks 0 and 1, sizes below 64 MiB */
  int64_t len = (int64_t)size;
  kiln_status_free(kiln_tensor_set_shape(&out->values[0], KILN_UINT8, 1, &len));
  out->values[0].data = size ? image : NULL;
  *label = f->label;
  kiln_status_free(kiln_tensor_set_shape(&out->values[1], KILN_INT64, 0, NULL));
  out->values[1].data = label;
  memcpy(text, f->relative, rel);
  *path = text;
  int64_t one = 1;
  kiln_status_free(kiln_tensor_set_shape(&out->values[2], KILN_STRING, 0, &one));
  out->values[2].data = path;
  return NULL;
}

static kiln_status images_next(kx_stage *stage, kiln_record *out, int *done) {
  images_source *s = (images_source *)stage;
  memset(out, 0, sizeof *out);
  *done = 0;
  while (s->next < s->n_files) {
    size_t i = s->next++;
    const image_file *f = &s->files[i];
    atomic_fetch_add(&stage->ctx->read, 1);
    kiln_status e = read_image(f, out);
    if (!e) {
      out->source = f->path;
      out->index = (int64_t)i;
      out->offset = -1;
      return NULL;
    }
    if (kiln_status_code(e) != KILN_INVALID_ARGUMENT) return kiln_status_prefix(e, "%s: ", f->path);
    if ((e = kx_bad_record(stage->ctx, f->path, (int64_t)i, -1, NULL, 0, e))) return e;
  }
  *done = 1;
  return NULL;
}

static kiln_status images_reset(kx_stage *stage, int64_t epoch) {
  (void)epoch;
  ((images_source *)stage)->next = 0;
  return NULL;
}

static void images_free(kx_stage *stage) {
  images_source *s = (images_source *)stage;
  if (!s) return;
  for (size_t i = 0; i < s->n_files; i++) free(s->files[i].path);
  free(s->files);
  for (int i = 0; i < s->n_classes; i++) free(s->classes[i]);
  free(s->classes);
  free(s->root);
  free(s);
}

static const kx_stage_ops images_ops = {"images", images_next, images_reset, images_free, NULL};

int kx_images_decode_channels(const kx_stage *s) {
  if (!s || s->ops != &images_ops) return -1;
  const images_source *im = (const images_source *)s;
  return im->decode ? im->channels : -1;
}

kiln_status kx_images_open(kx_data_ctx *ctx, const cJSON *spec, kx_stage **out) {
  *out = NULL;
  static const char *const keys[] = {"format", "path", "decode", "channels", NULL};
  const char *path = NULL;
  int decode = 1;
  int64_t channels = 0;
  kiln_status e = kx_spec_keys(spec, "source", keys);
  if (!e) e = kx_spec_string(spec, "source", "path", 1, &path);
  if (!e) e = kx_spec_bool(spec, "source", "decode", &decode);
  if (!e) e = kx_spec_int(spec, "source", "channels", 0, 0, 3, &channels);
  if (!e && channels == 2)
    e = kiln_error(KILN_INVALID_ARGUMENT, "source.channels: expected 0 (the image's own), 1 or 3, found 2");
  if (e) return e;
  images_source *s = calloc(1, sizeof *s);
  if (!s) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  s->base = (kx_stage){&images_ops, NULL, ctx};
  s->decode = decode;
  s->channels = (int)channels;
  size_t others = 0;
  if (!(s->root = kx_data_path(ctx, path))) e = kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  /* "root/" and "root" name the same folder; the relative paths must not start with a slash */
  for (size_t n = s->root ? strlen(s->root) : 0; n > 1 && s->root[n - 1] == '/'; n--) s->root[n - 1] = '\0';
  if (!e) e = list_classes(s, &others);
  if (!e) e = list_files(s, &others);
  if (e) {
    images_free(&s->base);
    return e;
  }
  kiln_log(KILN_LOG_INFO, "image folder %s: %zu images in %d classes; %zu other entries (not .jpg/.jpeg/.png) left out",
           s->root, s->n_files, s->n_classes, others);
  *out = &s->base;
  return NULL;
}
