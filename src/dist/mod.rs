//! Training beyond one process: the communicator a data-parallel session sums through,
//! the shard of a global batch each rank takes and in-process ranks for embedders and
//! tests (`comm`), and the MPI communicator (`mpi`, feature `mpi`).

pub mod comm;
#[cfg(feature = "mpi")]
pub mod mpi;
