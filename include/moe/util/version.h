/* version.h — the one place that says which version of moe this is
 * (`moe --version`); raised with each release in CHANGELOG.md. */
#ifndef MOE_VERSION_H
#define MOE_VERSION_H

#define MOE_VERSION "0.1.0"

#endif
