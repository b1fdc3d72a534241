// TensorBoard event files; tensorboard.h gives the record framing and the messages.
#include "titan/metrics/tensorboard.h"

#include <array>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstring>
#include <system_error>

#include <unistd.h>

#include "titan/core/error.h"

namespace titan::metrics {
namespace {

// One table of the reflected Castagnoli polynomial, built at compile time: entry i is
// the CRC register after shifting byte i through eight times.
constexpr std::array<uint32_t, 256> make_crc32c_table() {
  std::array<uint32_t, 256> table{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int bit = 0; bit < 8; ++bit) c = (c >> 1) ^ (0x82f63b78u & (0u - (c & 1u)));
    table[i] = c;
  }
  return table;
}
constexpr std::array<uint32_t, 256> kCrc32cTable = make_crc32c_table();

// Protocol buffer wire format: a key is (field number << 3) | wire type; wire types
// 0 varint, 1 fixed 64-bit, 2 length-delimited, 5 fixed 32-bit. Fixed widths are
// little-endian, which is how x86 and ARM store them, but the bytes are spelled out so
// the encoding does not depend on the host.
enum class WireType : uint8_t { Varint = 0, Fixed64 = 1, LengthDelimited = 2, Fixed32 = 5 };

void put_varint(std::string& out, uint64_t value) {
  while (value >= 0x80) {
    out += char(uint8_t(value) | 0x80);
    value >>= 7;
  }
  out += char(uint8_t(value));
}

void put_key(std::string& out, int field, WireType type) {
  put_varint(out, (uint64_t(field) << 3) | uint64_t(type));
}

void put_little_endian(std::string& out, uint64_t value, int bytes) {
  for (int i = 0; i < bytes; ++i) out += char(uint8_t(value >> (8 * i)));
}

void put_double(std::string& out, int field, double value) {
  uint64_t bits;
  std::memcpy(&bits, &value, sizeof bits);
  put_key(out, field, WireType::Fixed64);
  put_little_endian(out, bits, 8);
}

void put_float(std::string& out, int field, float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof bits);
  put_key(out, field, WireType::Fixed32);
  put_little_endian(out, bits, 4);
}

// int64 fields are varints of the two's-complement value (a negative step takes 10 bytes).
void put_int64(std::string& out, int field, int64_t value) {
  put_key(out, field, WireType::Varint);
  put_varint(out, uint64_t(value));
}

void put_bytes(std::string& out, int field, std::string_view bytes) {
  put_key(out, field, WireType::LengthDelimited);
  put_varint(out, bytes.size());
  out.append(bytes);
}

// Field numbers of event.proto and summary.proto.
constexpr int kEventWallTime = 1, kEventStep = 2, kEventFileVersion = 3, kEventSummary = 5;
constexpr int kSummaryValue = 1;
constexpr int kValueTag = 1, kValueSimpleValue = 2;

double unix_seconds_now() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string host_name() {
  char name[256] = {};
  if (gethostname(name, sizeof name - 1) != 0 || name[0] == '\0') return "localhost";
  return name;
}

}  // namespace

uint32_t crc32c(const void* data, size_t bytes, uint32_t crc) {
  const auto* p = static_cast<const uint8_t*>(data);
  uint32_t c = ~crc;
  for (size_t i = 0; i < bytes; ++i) c = kCrc32cTable[(c ^ p[i]) & 0xffu] ^ (c >> 8);
  return ~c;
}

uint32_t crc32c_masked(uint32_t crc) { return ((crc >> 15) | (crc << 17)) + 0xa282ead8u; }

std::string event_file_version_bytes(double wall_time) {
  std::string event;
  put_double(event, kEventWallTime, wall_time);
  put_bytes(event, kEventFileVersion, TensorBoardWriter::kFileVersion);
  return event;
}

std::string event_scalar_bytes(double wall_time, int64_t step, std::string_view tag, float value) {
  std::string summary_value;
  put_bytes(summary_value, kValueTag, tag);
  put_float(summary_value, kValueSimpleValue, value);
  std::string summary;
  put_bytes(summary, kSummaryValue, summary_value);
  std::string event;
  put_double(event, kEventWallTime, wall_time);
  put_int64(event, kEventStep, step);
  put_bytes(event, kEventSummary, summary);
  return event;
}

std::string tfrecord_bytes(std::string_view data) {
  std::string record;
  record.reserve(data.size() + 16);
  put_little_endian(record, data.size(), 8);
  put_little_endian(record, crc32c_masked(crc32c(record.data(), 8)), 4);
  record.append(data);
  put_little_endian(record, crc32c_masked(crc32c(data)), 4);
  return record;
}

TensorBoardWriter::TensorBoardWriter(const std::filesystem::path& folder) {
  std::error_code error;
  std::filesystem::create_directories(folder, error);
  TITAN_CHECK(!error) << "TensorBoard: cannot create " << folder << ": " << error.message();
  const double now = unix_seconds_now();
  char seconds[32];
  std::snprintf(seconds, sizeof seconds, "%010lld", (long long)std::floor(now));
  const std::string base = std::string("events.out.tfevents.") + seconds + "." + host_name();
  // "x": fail rather than reuse a file another writer (this run's other rank folder, a
  // restart within the same second) already made.
  for (int n = 1; !file_; ++n) {
    path_ = folder / (n == 1 ? base : base + "." + std::to_string(n));
    file_.reset(std::fopen(path_.c_str(), "wbx"));
    TITAN_CHECK(file_ || (errno == EEXIST && n < 1000))
        << "TensorBoard: cannot create " << path_ << ": " << std::strerror(errno);
  }
  write_record(event_file_version_bytes(now));
  flush();
}

TensorBoardWriter::~TensorBoardWriter() {
  if (file_) std::fflush(file_.get());
}

void TensorBoardWriter::add_scalar(std::string_view tag, double value, int64_t step,
                                   std::optional<double> wall_time) {
  write_record(event_scalar_bytes(wall_time ? *wall_time : unix_seconds_now(), step, tag,
                                  float(value)));
}

void TensorBoardWriter::write_record(std::string_view data) {
  const std::string record = tfrecord_bytes(data);
  TITAN_CHECK(std::fwrite(record.data(), 1, record.size(), file_.get()) == record.size())
      << "TensorBoard: cannot write " << path_ << ": " << std::strerror(errno);
}

void TensorBoardWriter::flush() {
  TITAN_CHECK(std::fflush(file_.get()) == 0)
      << "TensorBoard: cannot write " << path_ << ": " << std::strerror(errno);
  TITAN_CHECK(fsync(fileno(file_.get())) == 0)
      << "TensorBoard: cannot sync " << path_ << ": " << std::strerror(errno);
}

}  // namespace titan::metrics
