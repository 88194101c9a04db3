//! How folder and exercice errors become job outcomes, for every job kind
//! that writes folders.

use crate::exercice::ExerciceError;
use crate::job::JobError;
use crate::tree::folders::FolderError;

/// The database being unreachable is worth retrying; a missing client or
/// template is not.
pub fn from_folders(e: FolderError) -> JobError {
    if e.is_transient() {
        JobError::transient(e.to_string())
    } else {
        JobError::permanent(e.to_string())
    }
}

pub fn from_exercice(e: ExerciceError) -> JobError {
    match e {
        ExerciceError::Db(_) => JobError::transient(e.to_string()),
        other => JobError::permanent(other.to_string()),
    }
}
