#include "cblas_shim.h"
