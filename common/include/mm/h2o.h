/*
 * The one place that includes libh2o. Debian's libh2o-evloop.pc omits
 * H2O_USE_LIBUV=0, and without it the structs don't match the library.
 */
#ifndef MM_H2O_H
#define MM_H2O_H

#ifndef H2O_USE_LIBUV
#define H2O_USE_LIBUV 0
#endif
#include <h2o.h>
#include <h2o/socket/evloop.h>

#endif
