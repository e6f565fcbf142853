/* TensorBoard event files (internal to the trainer): the scalars of each step as tensorflow.Event
 * records in TFRecord framing, in a file TensorBoard finds by its events.out.tfevents.* name. */
#ifndef KILN_TRAIN_EVENTS_H
#define KILN_TRAIN_EVENTS_H

#include <stdint.h>

#include "kiln/core.h"

/* One open event file. Not thread-safe: one thread (rank 0's logging) writes it. */
typedef struct kx_events kx_events;

/* Creates `dir` (and its parents) if needed and opens a new file
 * dir/events.out.tfevents.<unix seconds>.<hostname>.<pid>.<n> (TensorFlow's naming; n counts the
 * files this process opened, so two writers never share a file), then writes the file_version
 * event "brain.Event:2" that TensorBoard expects first. KILN_IO when the directory cannot be
 * made or the file cannot be created. */
kiln_status kx_events_open(const char *dir, kx_events **out);

/* Appends one Event {wall_time = now, step, summary {value {tags[i], simple_value = values[i]}}}
 * for each of the n tags (one event per tag, as tf.summary.scalar writes them). Tags must be
 * non-empty UTF-8 of at most 1024 bytes; a bad tag is KILN_INVALID_ARGUMENT and nothing is
 * written. Events are buffered until kx_events_flush or kx_events_close. After a failed write
 * the file may end in a torn record, and every later call fails. */
kiln_status kx_events_scalars(kx_events *w, int64_t step, const char *const *tags, const float *values, int n);

/* Hands buffered events to the operating system (fflush; no fsync: a crash may lose the last
 * events, which TensorBoard tolerates). */
kiln_status kx_events_flush(kx_events *w);

/* The file's path, valid until kx_events_close. */
const char *kx_events_path(const kx_events *w);

/* Flushes, closes and frees the writer (NULL is ignored); a failure to flush is logged as a
 * warning, since there is no one left to return it to. */
void kx_events_close(kx_events *w);

#endif
