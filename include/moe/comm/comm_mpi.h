/* comm_mpi.h — the process group a program was started in: MPI's world
 * when launched by mpirun (or another MPI launcher), else the single-process
 * group. Implemented in src/comm/comm_mpi.c, which only the moe program
 * links (the library itself never names MPI). */
#ifndef MOE_COMM_MPI_H
#define MOE_COMM_MPI_H

#include "moe/comm/comm.h"

/* 1 when an MPI launcher started this process (its environment says so). */
int moe_comm_mpi_launched(void);
/* MPI's world when launched with more than one rank, else the single-process
 * group. moe_comm_free of the world finalizes MPI. */
int moe_comm_world(moe_comm **out, moe_err *err);

#endif
