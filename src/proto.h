/*
 * proto: the generated protobuf-c bindings, in one include.
 */
#ifndef GIM_PROTO_H
#define GIM_PROTO_H

#include "connect.ext.pb-c.h"
#include "logic.int.pb-c.h"

#endif
