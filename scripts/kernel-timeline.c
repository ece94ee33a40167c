// A kernel timeline without Nsight Systems: loaded into any CUDA process by the driver (CUDA_INJECTION64_PATH), it
// records every kernel's start and end through CUPTI's concurrent-kernel activity (no serialisation, unlike events
// around each launch) and writes them as CSV to $TIMELINE_OUT at exit: start ns, end ns, stream, blocks, threads a
// block, dynamic shared memory, registers, name. scripts/kernel-timeline builds it on the GPU machine against that
// machine's CUPTI (KERNEL_RECORD: the newest kernel record type its header declares) and runs a command under it.
#include <cupti.h>
#include <stdio.h>
#include <stdlib.h>
static FILE *out;
static void CUPTIAPI requested(uint8_t **buffer, size_t *size, size_t *maxRecords) {
  *size = 32 << 20; *buffer = aligned_alloc(8, *size); *maxRecords = 0;
}
static void CUPTIAPI completed(CUcontext ctx, uint32_t stream, uint8_t *buffer, size_t size, size_t valid) {
  CUpti_Activity *r = NULL;
  while (cuptiActivityGetNextRecord(buffer, valid, &r) == CUPTI_SUCCESS) {
    if (r->kind == CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL || r->kind == CUPTI_ACTIVITY_KIND_KERNEL) {
      KERNEL_RECORD *k = (KERNEL_RECORD *)r;
      fprintf(out, "%llu,%llu,%u,%d,%d,%d,%d,%s\n", (unsigned long long)k->start, (unsigned long long)k->end,
              k->streamId, k->gridX * k->gridY * k->gridZ, k->blockX * k->blockY * k->blockZ,
              k->dynamicSharedMemory, k->registersPerThread, k->name);
    }
  }
  free(buffer);
}
static void finish(void) { cuptiActivityFlushAll(1); if (out) fclose(out); }
int InitializeInjection(void) {
  const char *path = getenv("TIMELINE_OUT");
  out = fopen(path ? path : "timeline.csv", "w");
  cuptiActivityRegisterCallbacks(requested, completed);
  cuptiActivityEnable(CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL);
  atexit(finish);
  return 1;
}
