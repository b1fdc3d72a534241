// TensorBoard event files, written without TensorFlow or libprotobuf.
//
//   TensorBoardWriter tb(dump_folder / "tb");   // creates events.out.tfevents.<s>.<host>
//   tb.add_scalar("grad_norm", 1.25, 10);
//   tb.flush();                                 // fflush + fsync: a live TensorBoard sees it
//
// The file is a sequence of TFRecords (tensorflow/core/lib/io/record_writer.cc):
//
//   uint64 LE  length of data
//   uint32 LE  masked CRC-32C of those 8 length bytes
//   bytes      data: one serialized Event
//   uint32 LE  masked CRC-32C of data
//
// where masked(c) = ((c >> 15) | (c << 17)) + 0xa282ead8 and CRC-32C is the Castagnoli
// CRC (reflected polynomial 0x82f63b78, initial value and final xor 0xffffffff), not
// zlib's CRC-32. The Events are encoded here by hand, with the field numbers of
// tensorboard/compat/proto/event.proto and summary.proto:
//
//   Event   { double wall_time = 1; int64 step = 2; string file_version = 3;
//             Summary summary = 5; }
//   Summary { repeated Value value = 1; }
//   Value   { string tag = 1; float simple_value = 2; }
//
// The first record is Event{wall_time, file_version: "brain.Event:2"}; each scalar is one
// Event{wall_time, step, summary{value{tag, simple_value}}}, as torch.utils.tensorboard's
// add_scalar writes it. TensorBoard reads every file in a folder whose name holds
// "tfevents", so a resumed run's new file continues the same curves.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

namespace titan::metrics {

// CRC-32C (Castagnoli) of `bytes` bytes, table-driven. crc32c("123456789") == 0xe3069283.
// Pass a previous result as `crc` to continue over a further piece.
uint32_t crc32c(const void* data, size_t bytes, uint32_t crc = 0);
inline uint32_t crc32c(std::string_view data) { return crc32c(data.data(), data.size()); }
// TFRecord's mask: TensorFlow stores masked CRCs because a CRC computed over data that
// itself holds CRCs checks badly (leveldb's crc32c.h).
uint32_t crc32c_masked(uint32_t crc);

// The serialized Events (protocol buffer wire format) and one record holding `data`.
std::string event_file_version_bytes(double wall_time);
std::string event_scalar_bytes(double wall_time, int64_t step, std::string_view tag, float value);
std::string tfrecord_bytes(std::string_view data);

class TensorBoardWriter {
 public:
  static constexpr const char* kFileVersion = "brain.Event:2";

  // Creates `folder` if needed and a new file events.out.tfevents.<10-digit Unix
  // seconds>.<host name> in it (".2", ".3", ... appended when that name is taken, so a
  // writer never appends to another's file), then writes the file_version record.
  // Throws titan::Error when the folder or file cannot be made.
  explicit TensorBoardWriter(const std::filesystem::path& folder);
  ~TensorBoardWriter();  // flushes what is buffered (without fsync)
  TensorBoardWriter(const TensorBoardWriter&) = delete;
  TensorBoardWriter& operator=(const TensorBoardWriter&) = delete;

  // One scalar event, stamped with the current time (or `wall_time`, Unix seconds).
  // The value is stored as a float, as TensorBoard's simple_value is. Buffered until flush().
  void add_scalar(std::string_view tag, double value, int64_t step,
                  std::optional<double> wall_time = std::nullopt);
  // Writes the buffer out and fsyncs, so a TensorBoard reading the folder sees every event.
  void flush();

  const std::filesystem::path& path() const { return path_; }

 private:
  void write_record(std::string_view data);

  struct FileCloser {
    void operator()(std::FILE* file) const { std::fclose(file); }
  };
  std::filesystem::path path_;
  std::unique_ptr<std::FILE, FileCloser> file_;
};

}  // namespace titan::metrics
