/* checksum.h — CRC-32 checksums of the files of a checkpoint directory, in
 * DIR/CHECKSUMS (one line per file: "<crc32 hex> <size> <name>", the
 * zlib/PNG CRC-32, so Python's zlib.crc32 checks it too). Written after every
 * other file of the directory; verified when a file is loaded. */
#ifndef MOE_CHECKSUM_H
#define MOE_CHECKSUM_H

#include "moe/util/common.h"

uint32_t moe_crc32(uint32_t crc, const void *data, size_t len);

/* (Re)writes DIR/CHECKSUMS over every regular file of DIR but itself and
 * temporary files. */
int moe_checksums_write(const char *dir, moe_err *err);

/* Checks DIR/NAME against DIR/CHECKSUMS: size and CRC must match. A
 * directory without CHECKSUMS (made by hand or by another tool) is accepted
 * unverified; one whose CHECKSUMS does not list NAME is refused. */
int moe_checksums_verify(const char *dir, const char *name, moe_err *err);

#endif
