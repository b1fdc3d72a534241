// TensorBoard event files, read back by code that shares nothing with the writer: the
// TFRecord framing is checked here with a bit-by-bit CRC-32C (the library's is
// table-driven), and every Event is decoded by `protoc --decode_raw` (Debian package
// protobuf-compiler), which knows the protocol buffer wire format but not our encoder.
// Then titan-train itself, with --metrics.enable_tensorboard, must leave every scalar
// of every logged step in the file, equal to what it wrote to metrics.jsonl.
#include <gtest/gtest.h>

#include <bit>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <optional>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <unistd.h>

#include "support/train_process.h"
#include "titan/build_config.h"
#include "titan/core/error.h"
#include "titan/metrics/tensorboard.h"

namespace titan::metrics {
namespace {

namespace fs = std::filesystem;

// --- An independent reader ----------------------------------------------------------

// CRC-32C one bit at a time (RFC 3720, appendix B.4's definition), not the library's table.
uint32_t crc32c_bitwise(std::string_view bytes) {
  uint32_t crc = 0xffffffffu;
  for (const unsigned char byte : bytes) {
    crc ^= byte;
    for (int bit = 0; bit < 8; ++bit) crc = (crc & 1u) ? (crc >> 1) ^ 0x82f63b78u : crc >> 1;
  }
  return ~crc;
}

uint32_t masked_bitwise(std::string_view bytes) {
  return std::rotr(crc32c_bitwise(bytes), 15) + 0xa282ead8u;
}

uint64_t little_endian(std::string_view bytes) {
  uint64_t value = 0;
  for (size_t i = 0; i < bytes.size(); ++i) value |= uint64_t(uint8_t(bytes[i])) << (8 * i);
  return value;
}

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

// The payloads of a TFRecord file, each record's two CRCs checked. A bad record is a test
// failure, and reading stops there.
std::vector<std::string> read_records(const fs::path& path) {
  const std::string file = read_file(path);
  std::vector<std::string> payloads;
  size_t at = 0;
  while (at < file.size()) {
    if (file.size() - at < 12) {
      ADD_FAILURE() << path << ": " << file.size() - at << " stray bytes at offset " << at;
      break;
    }
    const std::string_view length_bytes(file.data() + at, 8);
    const uint64_t length = little_endian(length_bytes);
    EXPECT_EQ(little_endian(std::string_view(file.data() + at + 8, 4)), masked_bitwise(length_bytes))
        << "length CRC of the record at offset " << at;
    if (file.size() - at - 12 < length + 4) {
      ADD_FAILURE() << path << ": the record at offset " << at << " runs past the end";
      break;
    }
    const std::string_view data(file.data() + at + 12, length);
    EXPECT_EQ(little_endian(std::string_view(file.data() + at + 12 + length, 4)), masked_bitwise(data))
        << "data CRC of the record at offset " << at;
    payloads.emplace_back(data);
    at += 12 + length + 4;
  }
  return payloads;
}

// protoc on PATH, or empty (run_process wants a path, not a name).
std::string find_protoc() {
  const char* path = std::getenv("PATH");
  std::stringstream folders(path ? path : "/usr/bin:/bin");
  for (std::string folder; std::getline(folders, folder, ':');) {
    const fs::path candidate = fs::path(folder.empty() ? "." : folder) / "protoc";
    if (access(candidate.c_str(), X_OK) == 0) return candidate.string();
  }
  return "";
}

#define SKIP_WITHOUT_PROTOC(protoc)                                                         \
  do {                                                                                      \
    if ((protoc).empty()) {                                                                 \
      GTEST_SKIP() << "protoc is not on PATH: the Events are decoded by `protoc "           \
                      "--decode_raw` (Debian package protobuf-compiler; tools/setup.sh "    \
                      "installs it)";                                                       \
    }                                                                                       \
  } while (0)

// protoc --decode_raw's text: "N: value" per scalar field, "N {" ... "}" per field it could
// parse as a message; fixed64 and fixed32 print as hex, varints as unsigned decimals,
// strings and bytes C-escaped in double quotes.
struct RawField {
  int number = 0;
  std::string text;                // a scalar field's value as printed
  std::vector<RawField> children;  // a message field's fields
  bool message = false;
};

std::vector<RawField> parse_decode_raw(const std::string& text) {
  std::vector<RawField> root_fields;
  std::vector<std::vector<RawField>*> open = {&root_fields};
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);) {
    line.erase(0, line.find_first_not_of(' '));
    if (line.empty()) continue;
    if (line == "}") {
      EXPECT_GT(open.size(), 1u) << text;
      if (open.size() > 1) open.pop_back();
      continue;
    }
    RawField field;
    if (line.size() > 2 && line.ends_with(" {")) {
      field.number = std::stoi(line);
      field.message = true;
      open.back()->push_back(field);
      open.push_back(&open.back()->back().children);
      continue;
    }
    const size_t colon = line.find(": ");
    EXPECT_NE(colon, std::string::npos) << "unexpected protoc line: " << line;
    if (colon == std::string::npos) continue;
    field.number = std::stoi(line.substr(0, colon));
    field.text = line.substr(colon + 2);
    open.back()->push_back(field);
  }
  EXPECT_EQ(open.size(), 1u) << "unbalanced braces:\n" << text;
  return root_fields;
}

// A quoted, C-escaped string as protoc prints it.
std::string unquote(const std::string& quoted) {
  EXPECT_TRUE(quoted.size() >= 2 && quoted.front() == '"' && quoted.back() == '"') << quoted;
  std::string out;
  for (size_t i = 1; i + 1 < quoted.size(); ++i) {
    if (quoted[i] != '\\') {
      out += quoted[i];
      continue;
    }
    const char c = quoted[++i];
    if (c >= '0' && c <= '7') {
      int value = 0;
      for (int k = 0; k < 3 && quoted[i] >= '0' && quoted[i] <= '7'; ++k, ++i) {
        value = value * 8 + (quoted[i] - '0');
      }
      --i;
      out += char(value);
    } else {
      const std::map<char, char> simple = {{'n', '\n'}, {'r', '\r'}, {'t', '\t'}, {'"', '"'},
                                           {'\'', '\''}, {'\\', '\\'}};
      EXPECT_TRUE(simple.count(c)) << "escape \\" << c << " in " << quoted;
      out += simple.count(c) ? simple.at(c) : c;
    }
  }
  return out;
}

struct DecodedEvent {
  std::optional<double> wall_time;
  std::optional<int64_t> step;
  std::optional<std::string> file_version;
  std::vector<std::pair<std::string, float>> values;  // summary.value: tag, simple_value
};

// Event { double wall_time = 1; int64 step = 2; string file_version = 3; Summary summary = 5; }
// Summary { repeated Value value = 1; }  Value { string tag = 1; float simple_value = 2; }
DecodedEvent decode_event(const std::string& protoc, const std::string& payload) {
  const testing::ProcessResult run = testing::run_process(protoc, {"--decode_raw"}, payload);
  EXPECT_EQ(run.exit_code, 0) << run.err;
  DecodedEvent event;
  for (const RawField& field : parse_decode_raw(run.out)) {
    switch (field.number) {
      case 1:
        EXPECT_EQ(field.text.rfind("0x", 0), 0u) << "wall_time is not a fixed64: " << field.text;
        event.wall_time = std::bit_cast<double>(uint64_t(std::stoull(field.text, nullptr, 16)));
        break;
      case 2: event.step = int64_t(std::stoull(field.text)); break;
      case 3: event.file_version = unquote(field.text); break;
      case 5:
        EXPECT_TRUE(field.message);
        for (const RawField& value : field.children) {
          EXPECT_EQ(value.number, 1) << "Summary has only field 1";
          std::optional<std::string> tag;
          std::optional<float> simple_value;
          for (const RawField& part : value.children) {
            if (part.number == 1) {
              // A tag whose bytes happen to parse as a message would print as one.
              EXPECT_FALSE(part.message) << "protoc read the tag as a message";
              tag = unquote(part.text);
            } else if (part.number == 2) {
              EXPECT_EQ(part.text.rfind("0x", 0), 0u) << "simple_value is not a fixed32";
              simple_value = std::bit_cast<float>(uint32_t(std::stoul(part.text, nullptr, 16)));
            } else {
              ADD_FAILURE() << "unexpected Value field " << part.number;
            }
          }
          EXPECT_TRUE(tag && simple_value) << run.out;
          if (tag && simple_value) event.values.emplace_back(*tag, *simple_value);
        }
        break;
      default: ADD_FAILURE() << "unexpected Event field " << field.number << "\n" << run.out;
    }
  }
  return event;
}

std::vector<DecodedEvent> decode_file(const std::string& protoc, const fs::path& path) {
  std::vector<DecodedEvent> events;
  for (const std::string& payload : read_records(path)) events.push_back(decode_event(protoc, payload));
  return events;
}

std::vector<fs::path> event_files(const fs::path& folder) {
  std::vector<fs::path> files;
  if (!fs::is_directory(folder)) return files;
  for (const fs::directory_entry& entry : fs::directory_iterator(folder)) {
    if (entry.is_regular_file() && entry.path().filename().string().find("tfevents") != std::string::npos) {
      files.push_back(entry.path());
    }
  }
  return files;
}

double unix_seconds() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

fs::path fresh_folder(const std::string& name) {
  const fs::path folder = fs::temp_directory_path() / ("titan_tb_" + name);
  fs::remove_all(folder);
  return folder;
}

// --- CRC-32C --------------------------------------------------------------------------

TEST(Crc32c, MatchesTheCheckValueAndRfc3720Vectors) {
  EXPECT_EQ(crc32c("123456789"), 0xe3069283u);  // the standard check value
  EXPECT_EQ(crc32c(""), 0u);
  // RFC 3720 (iSCSI), appendix B.4.
  EXPECT_EQ(crc32c(std::string(32, '\0')), 0x8a9136aau);
  EXPECT_EQ(crc32c(std::string(32, '\xff')), 0x62a8ab43u);
  std::string ascending, descending;
  for (int i = 0; i < 32; ++i) ascending += char(i), descending += char(31 - i);
  EXPECT_EQ(crc32c(ascending), 0x46dd794eu);
  EXPECT_EQ(crc32c(descending), 0x113fdb5cu);
}

TEST(Crc32c, MaskedFormIsTensorFlowsRotateAndOffset) {
  // ((0xe3069283 >> 15) | (0xe3069283 << 17)) + 0xa282ead8, worked by hand.
  EXPECT_EQ(crc32c_masked(crc32c("123456789")), 0xc78ab0e5u);
  EXPECT_EQ(crc32c_masked(0), 0xa282ead8u);
  EXPECT_EQ(crc32c_masked(0xffffffffu), 0xa282ead7u);  // wraps modulo 2^32
}

TEST(Crc32c, AgreesWithTheBitwiseFormAndContinuesAcrossPieces) {
  std::string bytes;
  uint32_t state = 12345;
  for (int i = 0; i < 1000; ++i) {
    state = state * 1664525u + 1013904223u;
    bytes += char(state >> 24);
  }
  for (const size_t size : {size_t(1), size_t(7), size_t(8), size_t(63), size_t(1000)}) {
    const std::string_view piece(bytes.data(), size);
    EXPECT_EQ(crc32c(piece), crc32c_bitwise(piece)) << size;
    for (const size_t cut : {size_t(0), size / 3, size}) {
      EXPECT_EQ(crc32c(piece.data() + cut, size - cut, crc32c(piece.data(), cut)), crc32c(piece))
          << size << " cut at " << cut;
    }
  }
}

// --- Encoding -------------------------------------------------------------------------

TEST(TensorBoardEvents, EncodeToTheBytesTheWireFormatGives) {
  // Worked by hand from the wire format: key (field << 3 | type), then the value.
  const std::string scalar = event_scalar_bytes(1.5, 3, "a", 2.0f);
  const std::string expected_scalar(
      "\x09\x00\x00\x00\x00\x00\x00\xf8\x3f"  // 1: wall_time, fixed64 1.5
      "\x10\x03"                              // 2: step, varint 3
      "\x2a\x0a"                              // 5: summary, 10 bytes
      "\x0a\x08"                              //   1: value, 8 bytes
      "\x0a\x01" "a"                          //     1: tag "a"
      "\x15\x00\x00\x00\x40",                 //     2: simple_value, fixed32 2.0f
      23);
  EXPECT_EQ(scalar, expected_scalar);
  const std::string version = event_file_version_bytes(0.0);
  EXPECT_EQ(version, std::string("\x09\0\0\0\0\0\0\0\0\x1a\x0d" "brain.Event:2", 24));
  // Varints past one byte: step 300 is 0xac 0x02. A 200-byte tag makes Value 1 + 2 + 200 +
  // 5 = 208 bytes (length 0xd0 0x01) and Summary 3 + 208 = 211 (0xd3 0x01); the tag's own
  // length is 0xc8 0x01.
  const std::string big = event_scalar_bytes(0.0, 300, std::string(200, 'l'), 0.0f);
  ASSERT_EQ(big.size(), 9u + 3u + 3u + 211u);
  EXPECT_EQ(big.substr(9, 12), std::string("\x10\xac\x02" "\x2a\xd3\x01" "\x0a\xd0\x01" "\x0a\xc8\x01"));
  // A negative int64 is ten varint bytes of its two's complement.
  const std::string negative = event_scalar_bytes(0.0, -1, "a", 0.0f);
  EXPECT_EQ(negative.substr(9, 11), std::string("\x10\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01"));
}

TEST(TensorBoardEvents, RecordFramesTheDataWithMaskedCrcs) {
  const std::string data = "hello, tfrecord";
  const std::string record = tfrecord_bytes(data);
  ASSERT_EQ(record.size(), 8 + 4 + data.size() + 4);
  EXPECT_EQ(little_endian(std::string_view(record).substr(0, 8)), data.size());
  EXPECT_EQ(little_endian(std::string_view(record).substr(8, 4)), masked_bitwise(record.substr(0, 8)));
  EXPECT_EQ(record.substr(12, data.size()), data);
  EXPECT_EQ(little_endian(std::string_view(record).substr(12 + data.size(), 4)), masked_bitwise(data));
}

// --- The writer, read back ---------------------------------------------------------------

TEST(TensorBoardWriter, EveryScalarAtEveryStepReadsBackThroughProtoc) {
  const std::string protoc = find_protoc();
  SKIP_WITHOUT_PROTOC(protoc);
  const fs::path folder = fresh_folder("writer") / "nested" / "tb";  // made by the writer
  // Tags whose first byte is no valid protobuf key, so protoc prints them as strings.
  const std::vector<std::string> tags = {"loss_metrics/global_avg_loss", "grad_norm", "mfu(%)",
                                         "validation_metrics/perplexity", "lo\"ng\n" + std::string(150, 'x')};
  const std::vector<int64_t> steps = {0, 1, 127, 128, int64_t(1) << 40};
  const std::vector<double> values = {7.25, -1e-3, 3.4e38, std::numeric_limits<double>::quiet_NaN(),
                                      0.1, -std::numeric_limits<double>::infinity()};
  auto value_at = [&](size_t s, size_t t) { return values[(s * tags.size() + t) % values.size()]; };
  auto wall_at = [](size_t s, size_t t) { return 1.7e9 + double(s) + double(t) / 8.0 + 1.0 / 3.0; };

  const double before = unix_seconds();
  TensorBoardWriter writer(folder);
  for (size_t s = 0; s < steps.size(); ++s) {
    for (size_t t = 0; t < tags.size(); ++t) {
      writer.add_scalar(tags[t], value_at(s, t), steps[s], wall_at(s, t));
    }
  }
  writer.add_scalar("lr", 8e-4, 9);  // stamped with the current time
  writer.flush();
  const double after = unix_seconds();

  // The name, and what a reader sees while the writer is still open (flushed, not closed).
  ASSERT_EQ(event_files(folder), std::vector<fs::path>{writer.path()});
  char host[256] = {};
  ASSERT_EQ(gethostname(host, sizeof host - 1), 0);
  const std::string name = writer.path().filename().string();
  ASSERT_TRUE(std::regex_match(name, std::regex("events\\.out\\.tfevents\\.([0-9]{10})\\.(.*)"))) << name;
  EXPECT_EQ(name.substr(31), std::string(host));
  const double named_seconds = std::stod(name.substr(20, 10));
  EXPECT_LE(std::floor(before), named_seconds);
  EXPECT_LE(named_seconds, after);

  const std::vector<DecodedEvent> events = decode_file(protoc, writer.path());
  ASSERT_EQ(events.size(), 1 + steps.size() * tags.size() + 1);
  EXPECT_EQ(events[0].file_version, std::optional<std::string>("brain.Event:2"));
  ASSERT_TRUE(events[0].wall_time);
  EXPECT_LE(before, *events[0].wall_time);
  EXPECT_LE(*events[0].wall_time, after);
  EXPECT_FALSE(events[0].step);
  EXPECT_TRUE(events[0].values.empty());
  for (size_t s = 0; s < steps.size(); ++s) {
    for (size_t t = 0; t < tags.size(); ++t) {
      const DecodedEvent& e = events[1 + s * tags.size() + t];
      SCOPED_TRACE("step " + std::to_string(steps[s]) + " tag " + tags[t].substr(0, 40));
      EXPECT_FALSE(e.file_version);
      ASSERT_TRUE(e.wall_time && e.step);
      EXPECT_EQ(std::bit_cast<uint64_t>(*e.wall_time), std::bit_cast<uint64_t>(wall_at(s, t)));
      EXPECT_EQ(*e.step, steps[s]);
      ASSERT_EQ(e.values.size(), 1u);
      EXPECT_EQ(e.values[0].first, tags[t]);
      // simple_value is a float: the double rounded once, NaN and infinities kept.
      EXPECT_EQ(std::bit_cast<uint32_t>(e.values[0].second), std::bit_cast<uint32_t>(float(value_at(s, t))));
    }
  }
  const DecodedEvent& last = events.back();
  ASSERT_TRUE(last.wall_time && last.step);
  EXPECT_EQ(*last.step, 9);
  EXPECT_LE(before, *last.wall_time);
  EXPECT_LE(*last.wall_time, after);
  ASSERT_EQ(last.values.size(), 1u);
  EXPECT_EQ(last.values[0].first, "lr");
  EXPECT_EQ(last.values[0].second, float(8e-4));
}

TEST(TensorBoardWriter, NeverWritesIntoAFileThatExists) {
  const fs::path folder = fresh_folder("taken");
  fs::create_directories(folder);
  char host[256] = {};
  ASSERT_EQ(gethostname(host, sizeof host - 1), 0);
  // The names a writer made now or within the next second would take.
  const long long now = (long long)std::floor(unix_seconds());
  std::vector<fs::path> taken;
  for (const long long seconds : {now, now + 1}) {
    char digits[32];
    std::snprintf(digits, sizeof digits, "%010lld", seconds);
    taken.push_back(folder / (std::string("events.out.tfevents.") + digits + "." + host));
    std::ofstream(taken.back()) << "taken";
  }
  TensorBoardWriter first(folder);
  first.add_scalar("grad_norm", 1.0, 1, 1.0);
  first.flush();
  const std::string first_name = first.path().filename().string();
  ASSERT_TRUE(first_name.ends_with(std::string(host) + ".2")) << first_name;
  {
    TensorBoardWriter second(folder);  // a second writer in the same second: ".3"
    second.add_scalar("grad_norm", 2.0, 2, 2.0);
    second.flush();
    EXPECT_NE(second.path(), first.path());
  }
  for (const fs::path& file : taken) EXPECT_EQ(read_file(file), "taken") << file;
  const std::vector<fs::path> files = event_files(folder);
  ASSERT_EQ(files.size(), 4u);
  for (const fs::path& file : files) {
    if (file != taken[0] && file != taken[1]) {
      EXPECT_EQ(read_records(file).size(), 2u) << file;
    }
  }
}

TEST(TensorBoardWriter, AFolderThatCannotBeMadeIsAnError) {
  const fs::path blocker = fresh_folder("blocker");
  std::ofstream(blocker) << "a file, not a folder";
  EXPECT_THROW(TensorBoardWriter(blocker / "tb"), Error);
  fs::remove(blocker);
}

// --- titan-train ----------------------------------------------------------------------------

const std::vector<std::string> kTrainingTags = {
    "loss_metrics/global_avg_loss", "grad_norm", "lr", "n_tokens_seen", "throughput(tps)",
    "tflops", "mfu(%)", "memory/max_active(GiB)"};

// metrics.jsonl's key for each tag: the file must hold exactly those numbers, as floats.
const std::map<std::string, std::string> kJsonKey = {
    {"loss_metrics/global_avg_loss", "loss"}, {"grad_norm", "grad_norm"}, {"lr", "lr"},
    {"n_tokens_seen", "tokens"}, {"throughput(tps)", "tps"}, {"tflops", "tflops"},
    {"mfu(%)", "mfu"}, {"memory/max_active(GiB)", "memory_gib"},
    {"time_metrics/comm_wait(%)", "comm_percent"}, {"comm/mib_per_step", "comm_mib_per_step"},
    {"validation_metrics/loss", "val_loss"},
    {"validation_metrics/perplexity", "val_perplexity"}};

std::vector<std::string> tiny_run(const fs::path& dump, std::vector<std::string> extra = {}) {
  std::vector<std::string> args = {"--model.flavor", "tiny", "--training.dataset", "synthetic",
                                   "--training.seq_len", "32", "--training.local_batch_size", "2",
                                   "--training.steps", "3", "--metrics.log_freq", "1",
                                   "--metrics.peak_tflops", "1", "--metrics.enable_tensorboard",
                                   "--job.dump_folder", dump.string()};
  args.insert(args.end(), extra.begin(), extra.end());
  return args;
}

std::string describe(const testing::ProcessResult& r) {
  return "exit " + std::to_string(r.exit_code) + "\nstdout:\n" + r.out + "\nstderr:\n" + r.err;
}

// step -> tag -> value, from the one event file in `folder`; every event but the first
// holds exactly one scalar.
using StepScalars = std::map<int64_t, std::map<std::string, float>>;

StepScalars scalars_in(const std::string& protoc, const fs::path& folder) {
  StepScalars scalars;
  const std::vector<fs::path> files = event_files(folder);
  EXPECT_EQ(files.size(), 1u) << folder;
  if (files.size() != 1) return scalars;
  const std::vector<DecodedEvent> events = decode_file(protoc, files[0]);
  EXPECT_FALSE(events.empty());
  if (events.empty()) return scalars;
  EXPECT_EQ(events[0].file_version, std::optional<std::string>("brain.Event:2"));
  for (size_t i = 1; i < events.size(); ++i) {
    EXPECT_TRUE(events[i].step && events[i].wall_time && events[i].values.size() == 1) << "event " << i;
    if (!events[i].step || events[i].values.size() != 1) continue;
    EXPECT_TRUE(scalars[*events[i].step].emplace(events[i].values[0]).second)
        << events[i].values[0].first << " twice at step " << *events[i].step;
  }
  return scalars;
}

// Every scalar of every step in `expected_tags` (plus those metrics.jsonl has for the step),
// each equal to metrics.jsonl's number rounded to float, except the values of
// `own_clock_tags`, which a rank other than 0 measures with its own clock.
void expect_scalars_match_metrics(const StepScalars& scalars, const fs::path& metrics_jsonl,
                                  const std::vector<std::string>& expected_tags, int64_t steps,
                                  const std::set<std::string>& own_clock_tags = {}) {
  std::ifstream in(metrics_jsonl);
  int64_t lines = 0;
  for (std::string line; std::getline(in, line); ++lines) {
    const nlohmann::json json = nlohmann::json::parse(line);
    const int64_t step = json.at("step").get<int64_t>();
    SCOPED_TRACE("step " + std::to_string(step));
    ASSERT_TRUE(scalars.count(step));
    const std::map<std::string, float>& at_step = scalars.at(step);
    std::set<std::string> wanted(expected_tags.begin(), expected_tags.end());
    for (const auto& [tag, key] : kJsonKey) {
      if (json.contains(key)) wanted.insert(tag);
    }
    std::set<std::string> found;
    for (const auto& [tag, value] : at_step) found.insert(tag);
    EXPECT_EQ(found, wanted);
    for (const std::string& tag : wanted) {
      if (!at_step.count(tag) || own_clock_tags.count(tag)) continue;
      const std::string& key = kJsonKey.at(tag);
      ASSERT_TRUE(json.contains(key)) << key;
      EXPECT_EQ(at_step.at(tag), float(json.at(key).get<double>())) << tag;
    }
  }
  EXPECT_EQ(lines, steps);
  EXPECT_EQ(int64_t(scalars.size()), steps);
}

TEST(TensorBoardProcess, TitanTrainWritesEveryScalarOfEveryStep) {
  const std::string protoc = find_protoc();
  SKIP_WITHOUT_PROTOC(protoc);
  const fs::path dump = fresh_folder("train");
  // Synthetic training tokens; validation at steps 1 and 2 (step 1 and every validation.freq
  // steps) reads the SOTU shards' validation split.
  const testing::ProcessResult r = testing::run_titan_train(tiny_run(
      dump, {"--validation.enable", "--validation.dataset_path", testing::assets_path("data/sotu"),
             "--validation.freq", "2", "--validation.seq_len", "32", "--validation.local_batch_size", "2",
             "--validation.steps", "1", "--metrics.save_tb_folder", "board"}));
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  const auto scalars = scalars_in(protoc, dump / "board");
  expect_scalars_match_metrics(scalars, dump / "metrics.jsonl", kTrainingTags, 3);
  ASSERT_TRUE(scalars.count(1) && scalars.count(2) && scalars.count(3));
  EXPECT_TRUE(scalars.at(1).count("validation_metrics/loss"));
  EXPECT_TRUE(scalars.at(2).count("validation_metrics/loss"));
  EXPECT_TRUE(scalars.at(2).count("validation_metrics/perplexity"));
  EXPECT_FALSE(scalars.at(3).count("validation_metrics/loss"));
}

#if TITAN_HAVE_MPI
TEST(TensorBoardProcess, RankZeroWritesUnlessEveryRankIsAsked) {
  const std::string protoc = find_protoc();
  SKIP_WITHOUT_PROTOC(protoc);
  std::vector<std::string> tags = kTrainingTags;
  tags.push_back("time_metrics/comm_wait(%)");  // several ranks
  tags.push_back("comm/mib_per_step");

  const fs::path dump = fresh_folder("mpi_rank0");
  const testing::ProcessResult r = testing::run_titan_train_mpi(2, tiny_run(dump));
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  std::vector<fs::path> entries;
  for (const fs::directory_entry& entry : fs::directory_iterator(dump / "tb")) {
    entries.push_back(entry.path());
  }
  EXPECT_EQ(entries.size(), 1u) << "one file, from rank 0, and no rank folders";
  expect_scalars_match_metrics(scalars_in(protoc, dump / "tb"), dump / "metrics.jsonl", tags, 3);

  const fs::path all = fresh_folder("mpi_all");
  const testing::ProcessResult r_all =
      testing::run_titan_train_mpi(2, tiny_run(all, {"--metrics.save_for_all_ranks"}));
  ASSERT_EQ(r_all.exit_code, 0) << describe(r_all);
  EXPECT_TRUE(event_files(all / "tb").empty()) << "every rank writes into its own folder";
  // Loss, norm, lr, tokens, memory and comm share are reduced over ranks, so rank 1's equal
  // rank 0's line; the rates divide by rank 1's own interval.
  expect_scalars_match_metrics(scalars_in(protoc, all / "tb" / "rank_0"), all / "metrics.jsonl", tags, 3);
  expect_scalars_match_metrics(scalars_in(protoc, all / "tb" / "rank_1"), all / "metrics.jsonl", tags, 3,
                               {"throughput(tps)", "tflops", "mfu(%)"});
}
#endif

}  // namespace
}  // namespace titan::metrics
