// The trainer's checkpoints (docs/checkpoints.md): which boxes it saves and loads, resuming
// from the folder or an initial load (an HDF5 checkpoint or a Hugging Face folder), and the
// save policy (interval, last save, keep_latest_k, async).
#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <sstream>

#include "titan/build_config.h"
#include "titan/ckpt/checkpoint_folder.h"
#include "titan/config/load.h"
#include "titan/core/copy.h"
#include "titan/core/logging.h"
#include "titan/train/preemption.h"
#include "titan/train/trainer.h"
#if TITAN_HAVE_HDF5
#include "titan/ckpt/hdf5/hf_convert.h"
#endif

namespace titan::train {

std::vector<ckpt::TensorPiece> Trainer::checkpoint_pieces(bool with_optimizer, DType model_dtype,
                                                          std::vector<Tensor>* device_targets) {
  std::vector<ckpt::TensorPiece> pieces;
  if (device_targets) device_targets->clear();
  // HDF5 reads and writes host memory: a device tensor travels through a host copy.
  const MemoryTagScope tag("checkpoint");
  auto add = [&](std::string path, const nn::Parameter& p, const Tensor& tensor, DType stored) {
    Tensor local = tensor;
    if (!tensor.device().is_cpu()) local = to_device(tensor, Device::cpu());
    // Of the ranks holding the same box, the first writes it (every rank reads its own).
    pieces.push_back({std::move(path), p.global_shape(), p.local_box(), local,
                      p.placement().writes_checkpoint(), stored});
    if (device_targets) device_targets->push_back(tensor.device().is_cpu() ? Tensor() : tensor);
  };
  // Every rank lists every tensor of the model (HDF5 creates datasets collectively); one of
  // another pipeline stage's parameters is an empty piece here.
  std::map<std::string, size_t> held;
  for (size_t i = 0; i < parameters_.size(); ++i) held[parameters_[i]->name()] = i;
  const std::vector<models::ParameterShape> shapes = family_.parameter_shapes(config_);
  auto add_each = [&](const std::string& prefix, DType stored, auto tensor_of) {
    for (const models::ParameterShape& shape : shapes) {
      const auto at = held.find(shape.name);
      if (at != held.end()) {
        add(prefix + shape.name, *parameters_[at->second], tensor_of(at->second), stored);
        continue;
      }
      const Shape none(shape.shape.size(), 0);
      pieces.push_back({prefix + shape.name, shape.shape, nn::Box{none, none},
                        Tensor::empty(none, DType::F32), false, stored});
      if (device_targets) device_targets->push_back(Tensor());
    }
  };
  add_each("model/", model_dtype, [&](size_t i) { return parameters_[i]->shard(); });
  if (with_optimizer) {
    add_each("optimizer/exp_avg/", DType::F32, [&](size_t i) { return optimizer_->exp_avg(i); });
    add_each("optimizer/exp_avg_sq/", DType::F32,
             [&](size_t i) { return optimizer_->exp_avg_sq(i); });
  }
  // The model's buffers last (model/ too): whole on every rank of their stage, written by
  // the one at the origin of the other mesh dims.
  std::map<std::string, Tensor> buffers;
  for (const models::NamedBuffer& b : model_->buffers()) buffers[b.name] = b.value;
  bool origin = true;
  for (const distributed::MeshDim dim : {distributed::MeshDim::dp_replicate,
                                         distributed::MeshDim::dp_shard, distributed::MeshDim::cp,
                                         distributed::MeshDim::tp}) {
    origin = origin && mesh_->coordinate(dim) == 0;
  }
  for (const models::ParameterShape& shape : family_.buffer_shapes(config_)) {
    const auto at = buffers.find(shape.name);
    const bool held = at != buffers.end();
    const Shape none(shape.shape.size(), 0);
    pieces.push_back({"model/" + shape.name, shape.shape,
                      held ? nn::Box{none, shape.shape} : nn::Box{none, none},
                      held ? at->second : Tensor::empty(none, DType::F32), held && origin,
                      DType::F32});
    if (device_targets) device_targets->push_back(Tensor());
  }
  return pieces;
}

namespace {

// checkpoint.exclude_from_loading names torchtitan's state keys (the config checks them).
bool excluded(const config::JobConfig& config, const std::string& state) {
  const std::vector<std::string>& names = config.checkpoint.exclude_from_loading;
  return std::find(names.begin(), names.end(), state) != names.end();
}

// A step-<N>.h5 file, or the newest checkpoint in a folder.
std::string resolve_checkpoint(const std::filesystem::path& path) {
  if (!std::filesystem::is_directory(path)) return path.string();
  const std::vector<int64_t> steps = ckpt::checkpoint_steps(path);
  TITAN_CHECK_INPUT(!steps.empty()) << "checkpoint.initial_load_path: " << path.string()
                                    << " holds no step-<N>.h5 checkpoint";
  return ckpt::checkpoint_path(path, steps.back()).string();
}

}  // namespace

void Trainer::load_at_start() {
  const config::CheckpointSection& c = config_.checkpoint;
  const std::filesystem::path folder = std::filesystem::path(config_.job.dump_folder) / c.folder;
  const std::vector<int64_t> steps = ckpt::checkpoint_steps(folder);
  if (c.load_step >= 0) {
    TITAN_CHECK_INPUT(std::find(steps.begin(), steps.end(), c.load_step) != steps.end())
        << "checkpoint.load_step " << c.load_step << ": no step-" << c.load_step << ".h5 in "
        << folder.string() << (steps.empty() ? " (no checkpoints there)" : "");
    load_checkpoint(ckpt::checkpoint_path(folder, c.load_step).string(), false);
  } else if (!steps.empty()) {
    try {
      load_checkpoint(ckpt::checkpoint_path(folder, steps.back()).string(), false);
    } catch (const InputError& error) {  // name the way back to the one before it
      if (steps.size() < 2) throw;
      const int64_t before = steps[steps.size() - 2];
      throw InputError(std::string(error.what()) + "; the checkpoint before it is " +
                       ckpt::checkpoint_path(folder, before).string() +
                       " (checkpoint.load_step " + std::to_string(before) + ")");
    }
  } else if (c.initial_load_path && !c.initial_load_path->empty() && c.initial_load_in_hf) {
    load_hf_folder(*c.initial_load_path, folder);
  } else if (c.initial_load_path && !c.initial_load_path->empty()) {
    load_checkpoint(resolve_checkpoint(*c.initial_load_path), c.initial_load_model_only);
  }
}

// checkpoint.initial_load_in_hf: rank 0 converts the Hugging Face folder into a model-only
// checkpoint beside the job's own (not named step-<N>, so never taken for one), every rank
// loads its boxes from it, and it is removed again.
void Trainer::load_hf_folder(const std::string& hf_dir, const std::filesystem::path& folder) {
#if TITAN_HAVE_HDF5
  const std::filesystem::path converted = folder / "initial-load-from-hf.h5";
  int64_t failed = 0;
  std::string message;
  if (checkpoint_io_->rank() == 0) {
    try {
      std::filesystem::create_directories(folder);
      std::filesystem::remove(converted);
      ckpt::HfImportOptions options;
      options.hf_dir = hf_dir;
      options.out = converted.string();
      // No flavor: the import picks the one its shapes fit; loading then checks every shape
      // against this model.
      ckpt::import_hf_safetensors(options);
    } catch (const InputError& error) {
      failed = 1;
      message = error.what();
    }
  }
  // Bad input found by rank 0 is bad input for all: every rank throws it.
  if (distributed::all_reduce_scalar(*checkpoint_io_, failed) > 0) {
    TITAN_CHECK_INPUT(false) << "checkpoint.initial_load_path (Hugging Face): "
                             << (message.empty() ? "rank 0 could not convert " + hf_dir : message);
  }
  load_checkpoint(converted.string(), true);
  checkpoint_io_->barrier().wait();
  if (checkpoint_io_->rank() == 0) std::filesystem::remove(converted);
#else
  (void)hf_dir, (void)folder;
  TITAN_FAIL() << "checkpoint.initial_load_in_hf needs a build with HDF5";
#endif
}

void Trainer::load_checkpoint(const std::string& path, bool model_only) {
  const ckpt::CheckpointMeta meta = ckpt::read_checkpoint_meta(path, *checkpoint_io_);
  if (meta.model_only && !model_only) {
    log::warn("%s holds the model only: the optimizer, the data position and the step start "
              "fresh", path.c_str());
    model_only = true;
  }
  const bool with_optimizer = !model_only && !excluded(config_, "optimizer");
  std::vector<Tensor> device_targets;
  std::vector<ckpt::TensorPiece> pieces =
      checkpoint_pieces(with_optimizer, DType::F32, &device_targets);
  if (excluded(config_, "model")) {  // the parameters first, the buffers last
    const long model_pieces = long(family_.parameter_shapes(config_).size());
    const long buffer_pieces = long(family_.buffer_shapes(config_).size());
    pieces.erase(pieces.end() - buffer_pieces, pieces.end());
    device_targets.erase(device_targets.end() - buffer_pieces, device_targets.end());
    pieces.erase(pieces.begin(), pieces.begin() + model_pieces);
    device_targets.erase(device_targets.begin(), device_targets.begin() + model_pieces);
  }
  const auto started = std::chrono::steady_clock::now();
  ckpt::read_checkpoint_tensors(path, *checkpoint_io_, pieces);
  const double read_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  for (size_t i = 0; i < pieces.size(); ++i) {
    if (device_targets[i].defined()) copy_tensor(pieces[i].local, device_targets[i]);
  }
  model_->update_compute_copies();  // the weights the model computes with, from the masters
  if (with_optimizer) optimizer_->set_steps_taken(meta.optimizer_steps);
  if (!model_only && !excluded(config_, "train_state")) {
    step_ = meta.step;
    tokens_seen_ = meta.tokens_seen;
  }
  if (!model_only && !excluded(config_, "dataloader")) {
    const int64_t per_batch = config_.training.local_batch_size * mesh_->dp_degree();
    TITAN_CHECK_INPUT(meta.data_sequences % per_batch == 0)
        << path << ": " << meta.data_sequences << " sequences consumed is not a whole number of "
        << "local batches x dp = " << per_batch << "; resume with the same global batch";
    data_->seek(meta.data_sequences / per_batch);
  }
  log::info("loaded %s (step %lld, written on %s)%s; tensors read in %.2f s", path.c_str(),
            (long long)meta.step, meta.mesh.c_str(), model_only ? ": model only" : "", read_s);
}

void Trainer::maybe_save_checkpoint() {
  const config::CheckpointSection& c = config_.checkpoint;
  if (!c.enable || c.load_only) return;
  const bool last = step_ == config_.training.steps;
  const bool due = step_ % c.interval == 0 || last || (step_ == 1 && c.enable_first_step_checkpoint);
  if (!due) return;
  save_checkpoint(last && c.last_save_model_only, /*background=*/true);
}

void Trainer::save_checkpoint(bool model_only, bool background) {
  const config::CheckpointSection& c = config_.checkpoint;
  const bool last = step_ == config_.training.steps;
  last_saved_step_ = step_;
  // float16 exports are refused by the config's validation.
  const DType model_dtype =
      model_only && c.export_dtype == config::Precision::Bfloat16 ? DType::BF16 : DType::F32;
  ckpt::CheckpointMeta meta;
  meta.step = step_;
  meta.tokens_seen = tokens_seen_;
  meta.optimizer_steps = optimizer_->steps_taken();
  meta.data_sequences = data_->batches_served() * config_.training.local_batch_size * mesh_->dp_degree();
  meta.seed = int64_t(config_.debug.effective_seed());
  meta.model_only = model_only;
  meta.config_yaml = config::to_yaml(config_);
  meta.mesh = mesh_->shape().describe();
  meta.world_size = mesh_->world().size();
  const std::filesystem::path folder = std::filesystem::path(config_.job.dump_folder) / c.folder;
  if (checkpoint_io_->rank() == 0) {
    std::filesystem::create_directories(folder);
    check_free_space(folder, model_only, model_dtype);
  }
  checkpoint_io_->barrier().wait();
  const auto started = std::chrono::steady_clock::now();
  const std::string path = ckpt::checkpoint_path(folder, step_).string();
  std::vector<ckpt::TensorPiece> pieces = checkpoint_pieces(!model_only, model_dtype);
  const bool prunes = checkpoint_io_->rank() == 0;
  const int64_t keep = c.keep_latest_k;
  // checkpoint.last_save_in_hf: the last save is also written as a Hugging Face folder,
  // step-<N>-hf/, by rank 0 from the complete file.
  const bool in_hf = last && c.last_save_in_hf && prunes;
  auto finish = [folder, path, started, model_only, prunes, keep, in_hf, model_dtype, step = step_] {
#if TITAN_HAVE_HDF5
    if (in_hf) {
      ckpt::HfExportOptions options;
      options.out_dir = (folder / ("step-" + std::to_string(step) + "-hf")).string();
      options.dtype = model_dtype;
      ckpt::export_hf_safetensors(path, options);
      log::info("exported %s", options.out_dir.c_str());
    }
#else
    (void)in_hf, (void)model_dtype, (void)step;
#endif
    if (prunes) ckpt::prune_checkpoints(folder, keep);
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    log::info("saved %s in %.2f s%s", path.c_str(), seconds, model_only ? " (model only)" : "");
  };
  if (!async_writer_ || !background) {
    if (async_writer_) async_writer_->wait();  // one save at a time, in step order
    ckpt::write_checkpoint_file(path, *checkpoint_io_, meta, pieces);
    finish();
    return;
  }
  // The I/O thread gets copies: training changes the parameters while it writes (pieces of
  // a device run are host copies already). The staging copies are the previous save's
  // until it is written.
  async_writer_->wait();
  const MemoryTagScope tag("checkpoint");
  for (size_t i = 0; i < pieces.size() && device_.is_cpu(); ++i) {
    ckpt::TensorPiece& piece = pieces[i];
    const bool staged =
        i < checkpoint_staging_.size() && checkpoint_staging_[i].shape() == piece.local.shape();
    Tensor copy = staged ? checkpoint_staging_[i] : Tensor::empty(piece.local.shape(), DType::F32);
    copy_tensor(piece.local, copy);
    piece.local = copy;
  }
  async_writer_->start(path, *checkpoint_io_, std::move(meta), std::move(pieces), finish);
  // What the step paid: the copy, and the wait for the previous save if still in flight.
  const double paid_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  log::info("saving %s in the background (checkpoint.async_mode; the step waited %.2f s)",
            path.c_str(), paid_s);
}

// The save needs about the checkpoint's size (every parameter's global numel in the model
// dtype, and the two AdamW moments in f32 unless model-only) on the folder's file system.
// Checked by rank 0 before anything is written; failing, it names the need, what is free
// and the newest complete checkpoint, which stays as it is (exit 1: an I/O failure, the
// other ranks end with the job). TITAN_TEST_FREE_BYTES stands in for the free space
// (tests: a full disk on demand).
void Trainer::check_free_space(const std::filesystem::path& folder, bool model_only,
                               DType model_dtype) const {
  int64_t elements = 0;
  for (const models::ParameterShape& p : family_.parameter_shapes(config_)) {
    elements += shape_numel(p.shape);
  }
  const int64_t needed = elements * (dtype_bytes(model_dtype) + (model_only ? 0 : 8)) +
                         (int64_t(1) << 20);  // attributes, config text, HDF5's own
  std::error_code error;
  int64_t free = int64_t(std::filesystem::space(folder, error).available);
  if (const char* test_free = std::getenv("TITAN_TEST_FREE_BYTES")) free = std::atoll(test_free);
  if (error || free >= needed) return;
  const std::vector<int64_t> steps = ckpt::checkpoint_steps(folder);
  std::ostringstream message;  // a finding, not a failed check: no source location
  message << "checkpoint: " << folder.string() << " has " << free << " bytes free and the "
          << "checkpoint of step " << step_ << " needs about " << needed
          << "; nothing was written, and the last complete checkpoint, "
          << (steps.empty() ? std::string("none")
                            : ckpt::checkpoint_path(folder, steps.back()).string())
          << ", is untouched; free space there, lower checkpoint.keep_latest_k, or point "
          << "job.dump_folder elsewhere";
  throw Error(message.str());
}

void Trainer::stop_for_signal(int signal) {
  stopped_on_signal_ = signal;
  if (async_writer_) async_writer_->wait();
  const config::CheckpointSection& c = config_.checkpoint;
  std::string saved;
  if (c.enable && !c.load_only) {
    if (last_saved_step_ != step_) save_checkpoint(/*model_only=*/false, /*background=*/false);
    saved = "saved " + ckpt::checkpoint_path(std::filesystem::path(config_.job.dump_folder) /
                                                 c.folder, step_).string() +
            "; run the same job again (or let it requeue) to resume";
  } else {
    saved = "nothing saved (checkpoint.enable is false)";
  }
  log::info("stopped on %s at step %lld of %lld: %s", stop_signal_name(signal),
            (long long)step_, (long long)config_.training.steps, saved.c_str());
}

}  // namespace titan::train
