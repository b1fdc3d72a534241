// inspect.h's reading on a file already open, for the HDF5 code of this folder (the HF
// export reads tensor after tensor from one open file).
#pragma once

#include <string>

#include "titan/ckpt/hdf5/h5.h"
#include "titan/core/tensor.h"

namespace titan::ckpt {

// Opens `path` read-only after checking that it is a complete checkpoint of a known version
// (the same InputErrors as read_checkpoint_info).
h5::H5Object open_checkpoint(const std::string& path);
// read_whole_dataset (inspect.h) on an open file; `file_name` names it in errors.
Tensor read_whole_dataset(hid_t file, const std::string& file_name, const std::string& dataset);

}  // namespace titan::ckpt
