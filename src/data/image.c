/* Image decoding for the data layer: JPEG (libturbojpeg) and PNG (libspng) bytes to uint8 HWC. */
#include "data/data.h"

#include <spng.h>
#include <stdlib.h>
#include <string.h>
#include <turbojpeg.h>

/* Pixels an image may have (width * height): 2^28 is a 16384 x 16384 picture, 1 GiB as RGBA. */
#define MAX_PIXELS ((uint64_t)1 << 28)
/* Ancillary PNG chunks (text, ICC profiles) are kept in memory by libspng: bound them so that a
 * hostile file cannot make it allocate more than this, whatever its header says. */
#define PNG_CHUNK_LIMIT ((size_t)16 << 20)
#define PNG_CACHE_LIMIT ((size_t)64 << 20)

/* turbojpeg takes sizes as unsigned long */
_Static_assert(sizeof(unsigned long) >= sizeof(size_t), "unsigned long holds a size_t");

static const uint8_t png_magic[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};

static kiln_status check_size(const char *kind, uint64_t width, uint64_t height) {
  if (width == 0 || height == 0)
    return kiln_error(KILN_INVALID_ARGUMENT, "corrupt %s image: its header says %llux%llu pixels", kind,
                      (unsigned long long)width, (unsigned long long)height);
  if (width * height > MAX_PIXELS)
    return kiln_error(KILN_RESOURCE_EXHAUSTED, "%s image of %llux%llu pixels is larger than the limit of %llu pixels",
                      kind, (unsigned long long)width, (unsigned long long)height, (unsigned long long)MAX_PIXELS);
  return NULL;
}

/* PIL's RGB to L conversion (ITU-R 601-2 luma in 16-bit fixed point, rounded), so that a
 * converted PNG matches what Python pipelines see. */
static uint8_t luma(const uint8_t *rgb) {
  return (uint8_t)((rgb[0] * 19595u + rgb[1] * 38470u + rgb[2] * 7471u + 0x8000u) >> 16);
}

/* ---------------------------------------------------------------- JPEG */

static kiln_status decode_jpeg(const uint8_t *bytes, size_t len, int channels, kiln_tensor *out) {
  tjhandle tj = tjInitDecompress();
  if (!tj) return kiln_error(KILN_RESOURCE_EXHAUSTED, "cannot start a JPEG decoder: %s", tjGetErrorStr2(NULL));
  int width = 0, height = 0, subsamp = 0, colorspace = 0;
  kiln_status s = NULL;
  if (tjDecompressHeader3(tj, bytes, (unsigned long)len, &width, &height, &subsamp, &colorspace) != 0) {
    s = kiln_error(KILN_INVALID_ARGUMENT, "corrupt JPEG image: %s", tjGetErrorStr2(tj));
    goto done;
  }
  if ((s = check_size("JPEG", (uint64_t)(width > 0 ? width : 0), (uint64_t)(height > 0 ? height : 0)))) goto done;
  int c = channels ? channels : colorspace == TJCS_GRAY ? 1 : 3;
  int64_t dims[3] = {height, width, c};
  if ((s = kiln_tensor_alloc(out, KILN_UINT8, 3, dims))) goto done;
  /* Stop at the first warning (a truncated scan would otherwise come back padded with gray) and
   * bound progressive scans, which a crafted file can multiply to make decoding very slow. */
  if (tjDecompress2(tj, bytes, (unsigned long)len, out->data, width, 0, height, c == 1 ? TJPF_GRAY : TJPF_RGB,
                    TJFLAG_STOPONWARNING | TJFLAG_LIMITSCANS) != 0) {
    s = kiln_error(KILN_INVALID_ARGUMENT, "corrupt JPEG image (%dx%d): %s", width, height, tjGetErrorStr2(tj));
    kiln_tensor_release(out);
  }
done:
  tjDestroy(tj);
  return s;
}

/* ---------------------------------------------------------------- PNG */

static kiln_status png_error(const char *what, int rc) {
  return kiln_error(rc == SPNG_EMEM ? KILN_RESOURCE_EXHAUSTED : KILN_INVALID_ARGUMENT, "corrupt PNG image: %s: %s",
                    what, spng_strerror(rc));
}

/* Decodes into *out with `c` channels. libspng writes RGBA8, RGB8 (alpha dropped) and, for gray
 * images of at most 8 bits without transparency, G8 directly; the rest (gray from colour or from
 * an image with alpha) goes through an RGBA8 copy that is converted afterwards. After the pixels, spng_decode_chunks reads on to
 * IEND: libspng stops once the image data is complete, and would otherwise never check the CRC
 * of the last IDAT chunk or notice a file cut off after it. */
static kiln_status decode_png_pixels(spng_ctx *png, const struct spng_ihdr *ihdr, int has_alpha, int c,
                                     kiln_tensor *out) {
  int direct_fmt = 0;
  if (c == 4) direct_fmt = SPNG_FMT_RGBA8;
  else if (c == 3) direct_fmt = SPNG_FMT_RGB8;
  else if (c == 1 && !has_alpha && ihdr->color_type == SPNG_COLOR_TYPE_GRAYSCALE && ihdr->bit_depth <= 8)
    direct_fmt = SPNG_FMT_G8;
  int64_t dims[3] = {ihdr->height, ihdr->width, c};
  kiln_status s = kiln_tensor_alloc(out, KILN_UINT8, 3, dims);
  if (s) return s;
  size_t need = 0;
  int fmt = direct_fmt ? direct_fmt : SPNG_FMT_RGBA8;
  int rc = spng_decoded_image_size(png, fmt, &need);
  if (rc) {
    kiln_tensor_release(out);
    return png_error("image size", rc);
  }
  if (direct_fmt) {
    if (need != kiln_tensor_nbytes(out)) {
      kiln_tensor_release(out);
      return kiln_error(KILN_INTERNAL, "PNG decoder wants %zu bytes for a %ux%u image", need, ihdr->width,
                        ihdr->height);
    }
    rc = spng_decode_image(png, out->data, need, fmt, has_alpha && c == 4 ? SPNG_DECODE_TRNS : 0);
    if (!rc) rc = spng_decode_chunks(png);
    if (rc) {
      kiln_tensor_release(out);
      return png_error("pixel data", rc);
    }
    return NULL;
  }
  uint8_t *rgba = malloc(need);
  if (!rgba) {
    kiln_tensor_release(out);
    return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory decoding a %ux%u PNG image", ihdr->width, ihdr->height);
  }
  rc = spng_decode_image(png, rgba, need, SPNG_FMT_RGBA8, 0);
  if (!rc) rc = spng_decode_chunks(png);
  if (rc) {
    free(rgba);
    kiln_tensor_release(out);
    return png_error("pixel data", rc);
  }
  /* Alpha is dropped, not composited: PIL's convert("L") does the same. */
  uint8_t *dst = out->data;
  size_t pixels = (size_t)ihdr->width * ihdr->height;
  for (size_t i = 0; i < pixels; i++) {
    const uint8_t *p = rgba + 4 * i;
    dst[i] = luma(p);
  }
  free(rgba);
  return NULL;
}

static kiln_status decode_png(const uint8_t *bytes, size_t len, int channels, kiln_tensor *out) {
  spng_ctx *png = spng_ctx_new(0);
  if (!png) return kiln_error(KILN_RESOURCE_EXHAUSTED, "cannot start a PNG decoder: out of memory");
  kiln_status s = NULL;
  struct spng_ihdr ihdr;
  int rc = spng_set_png_buffer(png, bytes, len);
  if (!rc) rc = spng_set_chunk_limits(png, PNG_CHUNK_LIMIT, PNG_CACHE_LIMIT);
  if (rc) {
    s = png_error("setup", rc);
    goto done;
  }
  if ((rc = spng_get_ihdr(png, &ihdr))) {
    s = png_error("header", rc);
    goto done;
  }
  if ((s = check_size("PNG", ihdr.width, ihdr.height))) goto done;
  struct spng_trns trns;
  rc = spng_get_trns(png, &trns);
  if (rc && rc != SPNG_ECHUNKAVAIL) {
    s = png_error("tRNS chunk", rc);
    goto done;
  }
  int has_alpha = !rc || ihdr.color_type == SPNG_COLOR_TYPE_GRAYSCALE_ALPHA ||
                  ihdr.color_type == SPNG_COLOR_TYPE_TRUECOLOR_ALPHA;
  int c = channels;
  if (!c) c = has_alpha ? 4 : ihdr.color_type == SPNG_COLOR_TYPE_GRAYSCALE ? 1 : 3;
  s = decode_png_pixels(png, &ihdr, has_alpha, c, out);
done:
  spng_ctx_free(png);
  return s;
}

kiln_status kx_image_decode(const uint8_t *bytes, size_t len, int channels, kiln_tensor *out) {
  memset(out, 0, sizeof *out);
  if (channels != 0 && channels != 1 && channels != 3)
    return kiln_error(KILN_INVALID_ARGUMENT, "image channels must be 0 (as stored), 1 or 3, not %d", channels);
  if (len >= 3 && bytes[0] == 0xff && bytes[1] == 0xd8 && bytes[2] == 0xff)
    return decode_jpeg(bytes, len, channels, out);
  if (len >= sizeof png_magic && memcmp(bytes, png_magic, sizeof png_magic) == 0)
    return decode_png(bytes, len, channels, out);
  char first[3 * 8 + 1] = "";
  for (size_t i = 0, at = 0; i < len && i < 8; i++)
    at += (size_t)snprintf(first + at, sizeof first - at, "%s%02x", i ? " " : "", bytes[i]);
  return kiln_error(KILN_INVALID_ARGUMENT, "not a JPEG or PNG image (%zu bytes, starting %s)", len,
                    len ? first : "with nothing");
}
