/* The checkpoint container and directory: writing, verifying, keeping the newest K, finding the
 * newest valid one (format in checkpoint.h). */
#include "train/checkpoint.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <isa-l/crc.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAGIC "KILNCKPT"
#define FORMAT_VERSION 1u
#define HEADER_BYTES 32
#define NAME_BYTES 64
#define ENTRY_BYTES (NAME_BYTES + 16)
#define TRAILER_BYTES 4
#define ALIGN 64
#define FILE_NAME_CHARS 20 /* "ckpt-" + 10 digits + ".kiln" */
#define TEMP_PREFIX_CHARS 26 /* "." + a checkpoint's name + ".tmp." as kiln_file_write_atomic names it */

struct kx_ckpt {
  char *path;
  uint8_t *buf; /* the whole file, 64-byte aligned */
  size_t len;
  int64_t step;
  int count;
};

/* ---------------------------------------------------------------- bytes */

static void put_le32(uint8_t *p, uint32_t v) {
  for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static void put_le64(uint8_t *p, uint64_t v) {
  for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static uint32_t get_le32(const uint8_t *p) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; i--) v = v << 8 | p[i];
  return v;
}
static uint64_t get_le64(const uint8_t *p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--) v = v << 8 | p[i];
  return v;
}

/* CRC-32C in pieces: start from crc_begin(), end with ~. ISA-L's crc32_iscsi neither inverts its
 * seed nor its result, and takes an int length. */
static uint32_t crc_begin(void) { return 0xFFFFFFFFu; }
static uint32_t crc_update(uint32_t crc, const void *data, size_t len) {
  const unsigned char *p = data;
  while (len > 0) {
    int n = len > ((size_t)1 << 30) ? 1 << 30 : (int)len;
    crc = crc32_iscsi((unsigned char *)p, n, crc);
    p += n;
    len -= (size_t)n;
  }
  return crc;
}

static const uint8_t *entry(const uint8_t *buf, int i) { return buf + HEADER_BYTES + (size_t)i * ENTRY_BYTES; }

/* ---------------------------------------------------------------- verify */

/* Checks everything a reader relies on; messages leave the file's name to the caller. */
static kiln_status verify(const uint8_t *b, size_t len, int64_t *step, int *count) {
  if (len < HEADER_BYTES + TRAILER_BYTES)
    return kiln_error(KILN_INVALID_ARGUMENT, "truncated: %zu bytes, a checkpoint has at least %d", len,
                      HEADER_BYTES + TRAILER_BYTES);
  if (memcmp(b, MAGIC, 8) != 0) return kiln_error(KILN_INVALID_ARGUMENT, "not a kiln checkpoint: no KILNCKPT magic");
  uint32_t version = get_le32(b + 8);
  if (version != FORMAT_VERSION)
    return kiln_error(KILN_UNIMPLEMENTED, "format version %u, this kiln reads version %u", version, FORMAT_VERSION);
  uint64_t total = get_le64(b + 16);
  if (total != len)
    return kiln_error(KILN_INVALID_ARGUMENT, "%s: the header says %llu bytes, the file has %zu",
                      total > len ? "truncated" : "trailing bytes", (unsigned long long)total, len);
  size_t body = len - TRAILER_BYTES;
  uint32_t stored = get_le32(b + body), computed = ~crc_update(crc_begin(), b, body);
  if (stored != computed)
    return kiln_error(KILN_INVALID_ARGUMENT, "checksum mismatch: stored %08x, computed %08x (corrupt or partly written)",
                      stored, computed);

  uint32_t n = get_le32(b + 12);
  if (n > KX_CKPT_MAX_SECTIONS)
    return kiln_error(KILN_INVALID_ARGUMENT, "%u sections, at most %d expected", n, KX_CKPT_MAX_SECTIONS);
  size_t end = HEADER_BYTES + (size_t)n * ENTRY_BYTES; /* where the next section may start */
  if (end > body)
    return kiln_error(KILN_INVALID_ARGUMENT, "the table of %u sections needs %zu bytes, the file has %zu before its trailer",
                      n, end, body);
  int64_t s = (int64_t)get_le64(b + 24);
  if (s < 0 || s > KX_CKPT_MAX_STEP)
    return kiln_error(KILN_INVALID_ARGUMENT, "step %lld, expected 0..%lld", (long long)s, KX_CKPT_MAX_STEP);
  for (uint32_t i = 0; i < n; i++) {
    const uint8_t *e = entry(b, (int)i);
    size_t name_len = strnlen((const char *)e, NAME_BYTES);
    if (name_len == 0 || name_len == NAME_BYTES)
      return kiln_error(KILN_INVALID_ARGUMENT, "section %u: the name must be 1..%d bytes and NUL-terminated", i,
                        KX_CKPT_MAX_NAME);
    uint64_t off = get_le64(e + NAME_BYTES), size = get_le64(e + NAME_BYTES + 8);
    if (off % ALIGN != 0 || off < end || off > body || size > body - off)
      return kiln_error(KILN_INVALID_ARGUMENT,
                        "section %u ('%s'): %llu bytes at offset %llu, expected a %d-byte aligned offset from %zu "
                        "and an end by %zu",
                        i, (const char *)e, (unsigned long long)size, (unsigned long long)off, ALIGN, end, body);
    for (uint32_t j = 0; j < i; j++)
      if (strcmp((const char *)entry(b, (int)j), (const char *)e) == 0)
        return kiln_error(KILN_INVALID_ARGUMENT, "sections %u and %u are both named '%s'", j, i, (const char *)e);
    end = (size_t)(off + size);
  }
  *step = s;
  *count = (int)n;
  return NULL;
}

/* Verifies buf and wraps it into a checkpoint; takes buf (freeing it on failure). */
static kiln_status wrap(uint8_t *buf, size_t len, const char *name, kx_ckpt **out) {
  *out = NULL;
  int64_t step = 0;
  int count = 0;
  kiln_status e = verify(buf, len, &step, &count);
  if (e) {
    free(buf);
    return kiln_status_prefix(e, "%s: ", name);
  }
  kx_ckpt *c = calloc(1, sizeof *c);
  char *path = strdup(name);
  if (!c || !path) {
    free(c);
    free(path);
    free(buf);
    return kiln_error(KILN_RESOURCE_EXHAUSTED, "%s: out of memory", name);
  }
  *c = (kx_ckpt){.path = path, .buf = buf, .len = len, .step = step, .count = count};
  *out = c;
  return NULL;
}

static uint8_t *alloc_aligned(size_t len) {
  void *p = NULL;
  return posix_memalign(&p, ALIGN, len ? len : 1) == 0 ? p : NULL;
}

kiln_status kx_ckpt_parse(const void *data, size_t len, const char *name, kx_ckpt **out) {
  *out = NULL;
  uint8_t *buf = alloc_aligned(len);
  if (!buf) return kiln_error(KILN_RESOURCE_EXHAUSTED, "%s: out of memory for %zu bytes", name, len);
  if (len) memcpy(buf, data, len);
  return wrap(buf, len, name, out);
}

kiln_status kx_ckpt_read(const char *path, kx_ckpt **out) {
  *out = NULL;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return kiln_error(errno == ENOENT ? KILN_NOT_FOUND : KILN_IO, "%s: %s", path, strerror(errno));
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    close(fd);
    return kiln_error(KILN_IO, "%s: not a regular file", path);
  }
  /* the size comes from the file system, never from the file's own header */
  size_t len = (size_t)st.st_size;
  uint8_t *buf = alloc_aligned(len);
  if (!buf) {
    close(fd);
    return kiln_error(KILN_RESOURCE_EXHAUSTED, "%s: out of memory for %zu bytes", path, len);
  }
  size_t got = 0;
  int err = 0;
  while (got < len) {
    ssize_t r = read(fd, buf + got, len - got > ((size_t)1 << 30) ? ((size_t)1 << 30) : len - got);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) err = errno;
    if (r <= 0) break;
    got += (size_t)r;
  }
  close(fd);
  if (got != len) {
    free(buf);
    return kiln_error(KILN_IO, "%s: read %zu of %zu bytes: %s", path, got, len, err ? strerror(err) : "the file shrank");
  }
  return wrap(buf, len, path, out);
}

const void *kx_ckpt_get(const kx_ckpt *c, const char *name, size_t *len) {
  if (len) *len = 0;
  for (int i = 0; i < c->count; i++) {
    const uint8_t *e = entry(c->buf, i);
    if (strncmp((const char *)e, name, NAME_BYTES) == 0) {
      if (len) *len = (size_t)get_le64(e + NAME_BYTES + 8);
      return c->buf + get_le64(e + NAME_BYTES);
    }
  }
  return NULL;
}

int64_t kx_ckpt_step(const kx_ckpt *c) { return c->step; }
const char *kx_ckpt_path(const kx_ckpt *c) { return c->path; }
int kx_ckpt_count(const kx_ckpt *c) { return c->count; }
const char *kx_ckpt_name(const kx_ckpt *c, int i) {
  return i >= 0 && i < c->count ? (const char *)entry(c->buf, i) : NULL;
}

void kx_ckpt_free(kx_ckpt *c) {
  if (!c) return;
  free(c->buf);
  free(c->path);
  free(c);
}

/* ---------------------------------------------------------------- the directory */

typedef struct listed {
  int64_t step;
  char name[FILE_NAME_CHARS + 1];
} listed;

/* The step of a checkpoint's file name, or -1 for any other name. */
static int64_t step_of(const char *name) {
  if (strlen(name) != FILE_NAME_CHARS || strncmp(name, "ckpt-", 5) != 0 || strcmp(name + 15, ".kiln") != 0)
    return -1;
  int64_t step = 0;
  for (int i = 5; i < 15; i++) {
    if (name[i] < '0' || name[i] > '9') return -1;
    step = step * 10 + (name[i] - '0');
  }
  return step;
}

/* A temporary kiln_file_write_atomic left for a checkpoint when its writer was killed. */
static int is_checkpoint_temporary(const char *name) {
  if (strlen(name) <= TEMP_PREFIX_CHARS || name[0] != '.' || strncmp(name + 1 + FILE_NAME_CHARS, ".tmp.", 5) != 0)
    return 0;
  char base[FILE_NAME_CHARS + 1];
  memcpy(base, name + 1, FILE_NAME_CHARS);
  base[FILE_NAME_CHARS] = '\0';
  return step_of(base) >= 0;
}

static int newest_first(const void *a, const void *b) {
  int64_t x = ((const listed *)a)->step, y = ((const listed *)b)->step;
  return (x < y) - (x > y);
}

/* The checkpoints in dir, newest first. *missing is set (and the list empty) when dir does not
 * exist. Stale temporaries are deleted when delete_temporaries is set. */
static kiln_status list_dir(const char *dir, int delete_temporaries, listed **out, size_t *n, int *missing) {
  *out = NULL;
  *n = 0;
  *missing = 0;
  DIR *d = opendir(dir);
  if (!d) {
    if (errno == ENOENT) {
      *missing = 1;
      return NULL;
    }
    return kiln_error(KILN_IO, "checkpoint directory %s: %s", dir, strerror(errno));
  }
  listed *list = NULL;
  size_t count = 0, cap = 0;
  kiln_status e = NULL;
  for (;;) {
    errno = 0;
    struct dirent *de = readdir(d);
    if (!de) {
      if (errno) e = kiln_error(KILN_IO, "checkpoint directory %s: cannot list it: %s", dir, strerror(errno));
      break;
    }
    if (delete_temporaries && is_checkpoint_temporary(de->d_name)) {
      if (unlinkat(dirfd(d), de->d_name, 0) != 0)
        kiln_log(KILN_LOG_WARN, "cannot delete the stale temporary %s/%s: %s", dir, de->d_name, strerror(errno));
      continue;
    }
    int64_t step = step_of(de->d_name);
    if (step < 0) continue;
    if (count == cap) {
      size_t new_cap = cap ? 2 * cap : 16;
      listed *grown = realloc(list, new_cap * sizeof *grown);
      if (!grown) {
        e = kiln_error(KILN_RESOURCE_EXHAUSTED, "checkpoint directory %s: out of memory listing it", dir);
        break;
      }
      list = grown;
      cap = new_cap;
    }
    list[count].step = step;
    memcpy(list[count].name, de->d_name, FILE_NAME_CHARS + 1);
    count++;
  }
  closedir(d);
  if (e) {
    free(list);
    return e;
  }
  if (count) qsort(list, count, sizeof *list, newest_first);
  *out = list;
  *n = count;
  return NULL;
}


static char *join(const char *dir, const char *name) {
  size_t size = strlen(dir) + strlen(name) + 2;
  char *p = malloc(size);
  if (p) snprintf(p, size, "%s/%s", dir, name);
  return p;
}

static kiln_status check_sections(const kx_ckpt_section *sections, int n, int64_t step) {
  if (step < 0 || step > KX_CKPT_MAX_STEP)
    return kiln_error(KILN_INVALID_ARGUMENT, "checkpoint step %lld, expected 0..%lld", (long long)step, KX_CKPT_MAX_STEP);
  if (n < 0 || n > KX_CKPT_MAX_SECTIONS || (n > 0 && !sections))
    return kiln_error(KILN_INVALID_ARGUMENT, "checkpoint: %d sections, expected 0..%d", n, KX_CKPT_MAX_SECTIONS);
  for (int i = 0; i < n; i++) {
    const char *name = sections[i].name;
    size_t len = name ? strlen(name) : 0;
    if (len == 0 || len > KX_CKPT_MAX_NAME)
      return kiln_error(KILN_INVALID_ARGUMENT, "checkpoint section %d: a name of 1..%d bytes expected, got %zu", i,
                        KX_CKPT_MAX_NAME, len);
    if (sections[i].len > 0 && !sections[i].data)
      return kiln_error(KILN_INVALID_ARGUMENT, "checkpoint section '%s': %zu bytes without data", name, sections[i].len);
    for (int j = 0; j < i; j++)
      if (strcmp(sections[j].name, name) == 0)
        return kiln_error(KILN_INVALID_ARGUMENT, "checkpoint sections %d and %d are both named '%s'", j, i, name);
  }
  return NULL;
}

/* Lays the file out as parts for kiln_file_write_atomic_parts: header and table, then padding
 * and data for each section, then the trailer. */
static kiln_status write_file(const char *path, int64_t step, const kx_ckpt_section *sections, int n) {
  static const uint8_t zeros[ALIGN];
  size_t head_len = HEADER_BYTES + (size_t)n * ENTRY_BYTES, n_parts = 2 + 2 * (size_t)n;
  uint8_t *head = calloc(1, head_len), trailer[TRAILER_BYTES];
  const void **parts = calloc(n_parts, sizeof *parts);
  size_t *lens = calloc(n_parts, sizeof *lens);
  if (!head || !parts || !lens) {
    free(head);
    free(parts);
    free(lens);
    return kiln_error(KILN_RESOURCE_EXHAUSTED, "%s: out of memory", path);
  }
  size_t pos = head_len, k = 0;
  parts[k] = head;
  lens[k++] = head_len;
  kiln_status e = NULL;
  for (int i = 0; i < n && !e; i++) {
    size_t pad = (ALIGN - pos % ALIGN) % ALIGN;
    if (sections[i].len > SIZE_MAX - TRAILER_BYTES - ALIGN - pos) {
      e = kiln_error(KILN_INVALID_ARGUMENT, "%s: section '%s' of %zu bytes makes the file too large", path,
                     sections[i].name, sections[i].len);
      break;
    }
    uint8_t *en = head + HEADER_BYTES + (size_t)i * ENTRY_BYTES;
    memcpy(en, sections[i].name, strlen(sections[i].name));
    put_le64(en + NAME_BYTES, pos + pad);
    put_le64(en + NAME_BYTES + 8, sections[i].len);
    parts[k] = zeros;
    lens[k++] = pad;
    parts[k] = sections[i].data;
    lens[k++] = sections[i].len;
    pos += pad + sections[i].len;
  }
  if (!e) {
    memcpy(head, MAGIC, 8);
    put_le32(head + 8, FORMAT_VERSION);
    put_le32(head + 12, (uint32_t)n);
    put_le64(head + 16, pos + TRAILER_BYTES);
    put_le64(head + 24, (uint64_t)step);
    uint32_t crc = crc_begin();
    for (size_t i = 0; i < k; i++) crc = crc_update(crc, parts[i], lens[i]);
    put_le32(trailer, ~crc);
    parts[k] = trailer;
    lens[k++] = TRAILER_BYTES;
    e = kiln_file_write_atomic_parts(path, parts, lens, (int)k);
  }
  free(head);
  free(parts);
  free(lens);
  return e;
}

kiln_status kx_ckpt_write(const char *dir, int64_t step, const kx_ckpt_section *sections, int n, int keep) {
  kiln_status e = check_sections(sections, n, step);
  if (e) return e;
  if (!dir || !*dir) return kiln_error(KILN_INVALID_ARGUMENT, "checkpoint: no directory given");
  if ((e = kiln_dir_create(dir))) return kiln_status_prefix(e, "checkpoint directory: ");
  char name[48];
  snprintf(name, sizeof name, "ckpt-%010lld.kiln", (long long)step);
  char *path = join(dir, name);
  if (!path) return kiln_error(KILN_RESOURCE_EXHAUSTED, "%s: out of memory", dir);
  e = write_file(path, step, sections, n);
  free(path);
  if (e) return e;

  listed *list;
  size_t count;
  int missing;
  /* the new checkpoint is safe on disk: trouble pruning is a warning, not a failed write */
  kiln_status le = list_dir(dir, 1, &list, &count, &missing);
  if (le) {
    kiln_log(KILN_LOG_WARN, "old checkpoints not pruned: %s", kiln_status_message(le));
    kiln_status_free(le);
    return NULL;
  }
  size_t kept = 1; /* the new one */
  for (size_t i = 0; keep > 0 && i < count; i++) {
    if (list[i].step == step) continue;
    if (kept < (size_t)keep) {
      kept++;
      continue;
    }
    char *old = join(dir, list[i].name);
    if (!old || unlink(old) != 0)
      kiln_log(KILN_LOG_WARN, "cannot delete the old checkpoint %s/%s: %s", dir, list[i].name,
               old ? strerror(errno) : "out of memory");
    free(old);
  }
  free(list);
  return NULL;
}

kiln_status kx_ckpt_latest(const char *dir, kx_ckpt **out) {
  *out = NULL;
  listed *list;
  size_t count;
  int missing;
  kiln_status e = list_dir(dir, 0, &list, &count, &missing);
  if (e || missing) return e;
  for (size_t i = 0; i < count; i++) {
    char *path = join(dir, list[i].name);
    if (!path) {
      e = kiln_error(KILN_RESOURCE_EXHAUSTED, "%s: out of memory", dir);
      break;
    }
    kx_ckpt *c;
    kiln_status r = kx_ckpt_read(path, &c);
    if (!r && c->step != list[i].step) {
      r = kiln_error(KILN_INVALID_ARGUMENT, "%s: the header says step %lld, the name step %lld", path,
                     (long long)c->step, (long long)list[i].step);
      kx_ckpt_free(c);
    }
    free(path);
    if (!r) {
      *out = c;
      break;
    }
    if (kiln_status_code(r) == KILN_RESOURCE_EXHAUSTED) { /* not the file's fault: no reason to go back */
      e = r;
      break;
    }
    kiln_log(KILN_LOG_WARN, "skipping an invalid checkpoint: %s", kiln_status_message(r));
    kiln_status_free(r);
  }
  if (!e && !*out && count > 0)
    e = kiln_error(KILN_INVALID_ARGUMENT,
                   "checkpoint directory %s: none of its %zu checkpoints is valid (see the warnings); move them away "
                   "to start afresh",
                   dir, count);
  free(list);
  return e;
}
