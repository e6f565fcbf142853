/* The checkpoint container (named, 64-byte aligned sections under a checksum) and the checkpoint
 * directory (atomic writes, keep the newest K, find the newest valid one). Internal to kiln: the
 * trainer decides which sections a checkpoint holds; this file knows only bytes.
 *
 * A checkpoint is one file DIR/ckpt-<step, 10 digits>.kiln. Layout, integers little-endian:
 *   header   32 bytes        "KILNCKPT", u32 format version (1), u32 section count (<= 1024),
 *                            u64 size of the whole file, i64 step
 *   table    80 bytes each   name (64 bytes: 1..63 bytes then NUL padding), u64 offset, u64 length
 *   data     each section at an offset from the file's start that is a multiple of 64 (so floats can
 *            be used in place once the file is in 64-byte aligned memory), in table order, zero
 *            bytes between them
 *   trailer  u32 CRC-32C of every byte before it
 * The checksum is there for crashes and storage, not for adversaries: CRC-32C catches every error
 * burst up to 32 bits and any other damage (a torn or cut-short write, bit rot) but once in 2^32;
 * whoever can write the checkpoint directory can change the run anyway, so a keyed MAC would buy
 * nothing. */
#ifndef KILN_TRAIN_CHECKPOINT_H
#define KILN_TRAIN_CHECKPOINT_H

#include <stddef.h>
#include <stdint.h>

#include "kiln/core.h"

#define KX_CKPT_MAX_SECTIONS 1024
#define KX_CKPT_MAX_NAME 63        /* bytes of a section's name, NUL excluded */
#define KX_CKPT_MAX_STEP 9999999999LL /* the most a 10-digit file name holds */

/* One section to write: `len` bytes at `data` (NULL allowed when len is 0) under `name`. */
typedef struct kx_ckpt_section {
  const char *name;
  const void *data;
  size_t len;
} kx_ckpt_section;

/* Writes DIR/ckpt-<step>.kiln atomically (creating DIR and its parents), then deletes all but the
 * newest `keep` checkpoints by step (keep <= 0: keeps all). The file just written is always one of
 * those kept, even when DIR holds checkpoints of higher steps (from a run that went further before
 * it was resumed from an earlier point); temporaries left by a killed writer are deleted too.
 * Names must be 1..63 bytes and distinct, at most 1024 sections, 0 <= step <= 9999999999. A
 * failed write leaves DIR's checkpoints as they were; a checkpoint that cannot be deleted is only
 * warned about (the new one is safe). */
kiln_status kx_ckpt_write(const char *dir, int64_t step, const kx_ckpt_section *sections, int n, int keep);

/* A loaded, verified checkpoint: the whole file in 64-byte aligned memory. */
typedef struct kx_ckpt kx_ckpt;

/* Reads and verifies a checkpoint file: magic, format version, size, checksum, then the table
 * (count, names NUL-terminated and distinct, offsets aligned, in order and inside the file).
 * Damage is KILN_INVALID_ARGUMENT, a newer format KILN_UNIMPLEMENTED; messages start with the
 * path. */
kiln_status kx_ckpt_read(const char *path, kx_ckpt **out);
/* The same checks on a checkpoint's bytes in memory (copied: the caller keeps `data`); `name`
 * stands for the file in messages and in kx_ckpt_path. */
kiln_status kx_ckpt_parse(const void *data, size_t len, const char *name, kx_ckpt **out);

/* Finds the newest checkpoint in DIR (by the step in its name) that verifies and whose header
 * holds the step of its name. *out is NULL (and the status OK) when DIR holds no checkpoint or
 * does not exist. Each invalid newer one is logged with kiln_log(KILN_LOG_WARN, ...) naming the
 * file and the reason, and the next older one tried; when every one is invalid the result is an
 * error rather than a fresh start, which would overwrite what might still be salvaged. Files
 * other than ckpt-<10 digits>.kiln are ignored. */
kiln_status kx_ckpt_latest(const char *dir, kx_ckpt **out);

/* A section by name: its data (64-byte aligned, valid while c lives) and, when len is not NULL,
 * its length; NULL (and *len 0) when the checkpoint has no such section. A present section of
 * length 0 gives a non-NULL pointer. */
const void *kx_ckpt_get(const kx_ckpt *c, const char *name, size_t *len);
/* The step recorded in the checkpoint's header. */
int64_t kx_ckpt_step(const kx_ckpt *c);
/* The path it was read from (or the name given to kx_ckpt_parse). */
const char *kx_ckpt_path(const kx_ckpt *c);
/* Number of sections, and the name of section i (0 <= i < count), for listing a checkpoint. */
int kx_ckpt_count(const kx_ckpt *c);
const char *kx_ckpt_name(const kx_ckpt *c, int i);
/* Frees the checkpoint (NULL is fine). */
void kx_ckpt_free(kx_ckpt *c);

#endif
