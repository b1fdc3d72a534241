// safetensors (ckpt/safetensors.h): round trips of every dtype and awkward shapes, the byte
// layout of the format, atomic writes, row reads, and one InputError per kind of bad file.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "titan/ckpt/safetensors.h"
#include "titan/core/float_formats.h"

namespace titan::ckpt {
namespace {

namespace fs = std::filesystem;

// A fresh folder per test, removed afterwards.
class Safetensors : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* base = std::getenv("TMPDIR");
    std::string pattern = std::string(base && *base ? base : "/tmp") + "/titan_safetensors_XXXXXX";
    ASSERT_NE(::mkdtemp(pattern.data()), nullptr);
    dir_ = pattern;
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string file(const std::string& name) const { return (fs::path(dir_) / name).string(); }

  fs::path dir_;
};

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), std::streamsize(bytes.size()));
}

// A file made by hand: the length prefix, the header text as given, then the data.
std::string make_file(const std::string& header, const std::string& data) {
  std::string bytes(8, '\0');
  for (int i = 0; i < 8; ++i) bytes[size_t(i)] = char(uint64_t(header.size()) >> (8 * i));
  return bytes + header + data;
}

// Tensor with bytes 0, 1, 2, ... (wrapping at 251, a prime, so rows differ).
Tensor patterned(const Shape& shape, DType dtype, int salt = 0) {
  Tensor t = Tensor::empty(shape, dtype);
  auto* p = static_cast<uint8_t*>(t.raw_mutable_data());
  for (int64_t i = 0; i < t.bytes(); ++i) p[i] = uint8_t((i + salt) % 251);
  return t;
}

bool same_bytes(const Tensor& a, const Tensor& b) {
  return a.dtype() == b.dtype() && a.shape() == b.shape() &&
         (a.bytes() == 0 || std::memcmp(a.raw_data(), b.raw_data(), size_t(a.bytes())) == 0);
}

// Runs f, expecting InputError whose one-line message names the file and contains `what`.
template <class F>
void expect_input_error(F f, const std::string& path, const std::string& what) {
  try {
    f();
    ADD_FAILURE() << "no InputError for " << what;
  } catch (const InputError& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find(path), std::string::npos) << message;
    EXPECT_NE(message.find(what), std::string::npos) << message;
    EXPECT_EQ(message.find('\n'), std::string::npos) << message;
  }
}

TEST_F(Safetensors, RoundTripsEveryDtypeAndShape) {
  std::vector<std::pair<std::string, Tensor>> tensors = {
      {"layers.0.attention.wq.weight", patterned({8, 4}, DType::F32, 1)},
      {"bf16", patterned({3, 5}, DType::BF16, 2)},
      {"f16", patterned({7}, DType::F16, 3)},
      {"f8e4m3", patterned({2, 3, 5}, DType::F8E4M3, 4)},
      {"f8e5m2", patterned({5}, DType::F8E5M2, 5)},
      {"tokens", patterned({2, 3, 4}, DType::I64, 6)},
      {"i32", patterned({1, 1, 1, 3}, DType::I32, 7)},
      {"u8", patterned({9}, DType::U8, 8)},
      {"scalar", patterned({}, DType::F32, 9)},         // 0-d: one element
      {"empty", patterned({0, 3}, DType::F32, 10)},     // zero elements
      {"empty_i64", patterned({4, 0}, DType::I64, 11)},
  };
  const std::string path = file("a.safetensors");
  write_safetensors(path, tensors, {{"step", "7"}, {"note", "a \"quoted\" value"}});
  EXPECT_FALSE(fs::exists(path + ".tmp"));

  const SafetensorsFile f = read_safetensors(path);
  std::vector<std::string> expected_names;
  for (const auto& [name, t] : tensors) expected_names.push_back(name);
  // Names come back in data order; zero-byte tensors share an offset with a neighbour, so
  // only the others' order is fixed.
  ASSERT_EQ(f.names().size(), expected_names.size());
  std::vector<std::string> nonempty;
  for (const std::string& name : f.names()) {
    if (f.entry(name).end > f.entry(name).begin) nonempty.push_back(name);
  }
  EXPECT_EQ(nonempty, std::vector<std::string>(expected_names.begin(), expected_names.begin() + 9));
  for (const auto& [name, t] : tensors) {
    ASSERT_TRUE(f.contains(name)) << name;
    EXPECT_EQ(f.dtype(name), t.dtype()) << name;
    EXPECT_EQ(f.shape(name), t.shape()) << name;
    const Tensor back = f.tensor(name);
    EXPECT_TRUE(back.device().is_cpu());
    EXPECT_TRUE(same_bytes(back, t)) << name;
  }
  EXPECT_EQ(f.tensor("scalar").numel(), 1);
  EXPECT_EQ(f.tensor("scalar").dim(), 0);
  EXPECT_EQ(f.metadata().at("step"), "7");
  EXPECT_EQ(f.metadata().at("note"), "a \"quoted\" value");
  EXPECT_EQ(f.metadata().at("format"), "pt");  // added for transformers
  EXPECT_FALSE(f.contains("__metadata__"));
}

TEST_F(Safetensors, ValuesSurviveExactly) {
  Tensor x = Tensor::empty({4}, DType::F32);
  float* p = x.mutable_data<float>();
  p[0] = -0.0f;
  p[1] = 1e-45f;  // a subnormal
  p[2] = 3.14159274f;
  p[3] = std::numeric_limits<float>::infinity();
  Tensor ids = Tensor::empty({2}, DType::I64);
  ids.mutable_data<int64_t>()[0] = -100;
  ids.mutable_data<int64_t>()[1] = int64_t(1) << 40;
  const std::string path = file("v.safetensors");
  write_safetensors(path, {{"x", x}, {"ids", ids}});
  const SafetensorsFile f = read_safetensors(path);
  const Tensor xb = f.tensor("x");
  for (int i = 0; i < 4; ++i) EXPECT_EQ(f32_bits(xb.data<float>()[i]), f32_bits(p[i])) << i;
  EXPECT_EQ(f.tensor("ids").data<int64_t>()[0], -100);
  EXPECT_EQ(f.tensor("ids").data<int64_t>()[1], int64_t(1) << 40);
}

TEST_F(Safetensors, ByteLayoutFollowsTheSpec) {
  const Tensor a = patterned({2, 3}, DType::F32);
  const Tensor b = patterned({5}, DType::BF16, 1);
  const std::string path = file("layout.safetensors");
  write_safetensors(path, {{"a", a}, {"b", b}}, {{"k", "v"}});
  const std::string bytes = read_bytes(path);
  ASSERT_GE(bytes.size(), 8u);
  uint64_t n = 0;  // little-endian u64
  for (int i = 7; i >= 0; --i) n = (n << 8) | uint8_t(bytes[size_t(i)]);
  EXPECT_EQ(n % 8, 0u) << "the data must start 8-byte aligned";
  ASSERT_EQ(bytes.size(), 8 + n + 24 + 10) << "header, then exactly the tensors' bytes";
  const std::string header = bytes.substr(8, n);
  EXPECT_EQ(header.front(), '{');
  const size_t last = header.find_last_not_of(' ');
  EXPECT_EQ(header[last], '}');
  EXPECT_LT(header.size() - last - 1, 8u) << "padding is spaces, fewer than 8";

  const nlohmann::json j = nlohmann::json::parse(header);  // spaces included
  EXPECT_EQ(j["__metadata__"]["k"], "v");
  EXPECT_EQ(j["__metadata__"]["format"], "pt");
  EXPECT_EQ(j["a"]["dtype"], "F32");
  EXPECT_EQ(j["a"]["shape"], nlohmann::json({2, 3}));
  EXPECT_EQ(j["a"]["data_offsets"], nlohmann::json({0, 24}));
  EXPECT_EQ(j["b"]["dtype"], "BF16");
  EXPECT_EQ(j["b"]["shape"], nlohmann::json({5}));
  EXPECT_EQ(j["b"]["data_offsets"], nlohmann::json({24, 34}));  // packed in the given order
  EXPECT_EQ(bytes.substr(8 + n, 24),
            std::string(static_cast<const char*>(a.raw_data()), 24));
  EXPECT_EQ(bytes.substr(8 + n + 24, 10),
            std::string(static_cast<const char*>(b.raw_data()), 10));
  EXPECT_EQ(read_safetensors(path).data_offset(), int64_t(8 + n));
}

TEST_F(Safetensors, ReadsAFileWrittenByHand) {
  // As another writer might produce it: unpadded, keys in any order, metadata last.
  const std::string header =
      R"({"z":{"data_offsets":[8,16],"shape":[2],"dtype":"I32"},)"
      R"("y":{"shape":[2],"dtype":"F32","data_offsets":[0,8]},"__metadata__":{"format":"pt"}})";
  std::string data(16, '\0');
  const float y[2] = {1.5f, -2.0f};
  const int32_t z[2] = {7, -9};
  std::memcpy(data.data(), y, 8);
  std::memcpy(data.data() + 8, z, 8);
  const std::string path = file("hand.safetensors");
  write_bytes(path, make_file(header, data));
  const SafetensorsFile f = read_safetensors(path);
  EXPECT_EQ(f.names(), (std::vector<std::string>{"y", "z"}));  // data order
  EXPECT_EQ(f.tensor("y").data<float>()[1], -2.0f);
  EXPECT_EQ(f.tensor("z").data<int32_t>()[1], -9);
}

TEST_F(Safetensors, ReadsRowBlocks) {
  const Tensor w = patterned({6, 5}, DType::BF16, 3);
  const std::string path = file("rows.safetensors");
  write_safetensors(path, {{"s", patterned({}, DType::F32)}, {"w", w}});
  const SafetensorsFile f = read_safetensors(path);
  const Tensor rows = f.tensor_rows("w", 2, 3);
  EXPECT_EQ(rows.shape(), (Shape{3, 5}));
  EXPECT_TRUE(same_bytes(rows, w.narrow(2, 3)));
  EXPECT_EQ(f.tensor_rows("w", 6, 0).numel(), 0);
  EXPECT_THROW(f.tensor_rows("w", 4, 3), Error);
  EXPECT_THROW(f.tensor_rows("s", 0, 1), Error);
}

TEST_F(Safetensors, WritesAtomicallyAndReplaces) {
  const std::string path = file("atomic.safetensors");
  write_safetensors(path, {{"x", patterned({3}, DType::F32)}});
  write_safetensors(path, {{"y", patterned({4}, DType::I64)}});
  const SafetensorsFile f = read_safetensors(path);
  EXPECT_FALSE(f.contains("x"));
  EXPECT_EQ(f.shape("y"), (Shape{4}));
  EXPECT_FALSE(fs::exists(path + ".tmp"));
  // Bad arguments are refused before any file is created.
  const std::string other = file("never.safetensors");
  EXPECT_THROW(write_safetensors(other, {{"x", Tensor()}}), Error);
  EXPECT_THROW(write_safetensors(other, {{"x", patterned({1}, DType::U8)},
                                         {"x", patterned({1}, DType::U8)}}),
               Error);
  EXPECT_THROW(write_safetensors(other, {{"__metadata__", patterned({1}, DType::U8)}}), Error);
  EXPECT_FALSE(fs::exists(other));
  EXPECT_FALSE(fs::exists(other + ".tmp"));
  // A folder that does not exist: an I/O Error naming the file, nothing left behind.
  EXPECT_THROW(write_safetensors(file("no/such/dir.safetensors"), {}), Error);
}

TEST_F(Safetensors, EmptyFileListHasOnlyMetadata) {
  const std::string path = file("empty.safetensors");
  write_safetensors(path, {});
  const SafetensorsFile f = read_safetensors(path);
  EXPECT_TRUE(f.names().empty());
  EXPECT_EQ(f.metadata().at("format"), "pt");
}

TEST_F(Safetensors, DtypeNames) {
  for (DType d : {DType::F32, DType::BF16, DType::F16, DType::F8E4M3, DType::F8E5M2, DType::I32,
                  DType::I64, DType::U8}) {
    EXPECT_EQ(safetensors_dtype_from_name(safetensors_dtype_name(d)), d);
  }
  EXPECT_STREQ(safetensors_dtype_name(DType::F8E4M3), "F8_E4M3");
  EXPECT_THROW(safetensors_dtype_from_name("F64"), InputError);
}

// Each kind of bad file: InputError, one line, naming the file and the problem.
TEST_F(Safetensors, BadFilesThrowInputError) {
  const std::string good = file("good.safetensors");
  write_safetensors(good, {{"a", patterned({4, 2}, DType::F32)}, {"b", patterned({3}, DType::I64)}});
  const std::string bytes = read_bytes(good);
  const std::string path = file("bad.safetensors");
  auto expect_bad = [&](const std::string& content, const std::string& what) {
    write_bytes(path, content);
    SCOPED_TRACE(what);
    expect_input_error([&] { read_safetensors(path); }, path, what);
  };
  const std::string data(32 + 24, '\0');
  const std::string a = R"("a":{"dtype":"F32","shape":[4,2],"data_offsets":[0,32]})";
  const std::string b = R"("b":{"dtype":"I64","shape":[3],"data_offsets":[32,56]})";

  expect_input_error([&] { read_safetensors(file("missing.safetensors")); },
                     file("missing.safetensors"), "cannot open");
  expect_bad("", "shorter than the 8-byte header length");
  expect_bad(bytes.substr(0, 5), "shorter than the 8-byte header length");
  expect_bad(bytes.substr(0, bytes.size() - 1), "truncated");           // data cut short
  expect_bad(bytes.substr(0, 20), "runs past the end of the file");      // header cut short
  expect_bad(bytes + "xx", "trailing");
  std::string huge = bytes;
  huge[6] = 1;  // N ~ 2^48
  expect_bad(huge, "exceeds the format's limit");
  expect_bad(make_file("[1, 2]", ""), "does not start with '{'");
  expect_bad(make_file(R"({"a": {"dtype": "F32", )", ""), "not valid JSON");
  expect_bad(make_file("{" + a + "," + b + "," + a + "}", data), "names 'a' twice");
  expect_bad(make_file("{" + a + "," + R"("b":{"dtype":"F64","shape":[3],"data_offsets":[32,56]}})",
                       data),
             "dtype 'F64'");
  expect_bad(make_file("{" + a + "," + R"("b":{"dtype":"I64","shape":[3],"data_offsets":[32,64]}})",
                       data),
             "span 32 bytes, but I64 [3] needs 24");
  expect_bad(make_file("{" + a + "," + R"("b":{"dtype":"I64","shape":[3],"data_offsets":[40,64]}})",
                       std::string(64, '\0')),
             "(a gap)");
  expect_bad(make_file("{" + a + "," + R"("b":{"dtype":"I64","shape":[3],"data_offsets":[24,48]}})",
                       data),
             "overlaps");
  expect_bad(make_file("{" + a + "," + R"("b":{"dtype":"I64","shape":[3],"data_offsets":[32,56]}})",
                       std::string(40, '\0')),
             "run past the end of the data");
  expect_bad(make_file("{" + a + "," + R"("b":{"dtype":"I64","shape":[-3],"data_offsets":[32,56]}})",
                       data),
             "not a size");
  expect_bad(make_file("{" + a + "," + R"("b":{"dtype":"I64","shape":[3],"data_offsets":[56,32]}})",
                       data),
             "end before they begin");
  expect_bad(make_file("{" + a + "," + R"("b":{"dtype":"I64","shape":[3]}})", data),
             "has no \"data_offsets\"");
  expect_bad(make_file("{" + a + "," + b + R"(,"__metadata__":{"step":3}})", data),
             "is not a string");
  expect_bad(make_file(R"({"a":[1,2]})", ""), "is not a JSON object");

  // A name that is absent, from a good file.
  const SafetensorsFile f = read_safetensors(good);
  expect_input_error([&] { f.tensor("output.weight"); }, good, "no tensor named 'output.weight'");
  expect_input_error([&] { f.shape("c"); }, good, "no tensor named 'c'");
  // The file shrinking after the header was read.
  write_bytes(good, bytes.substr(0, bytes.size() - 8));
  expect_input_error([&] { f.tensor("b"); }, good, "cannot read tensor 'b'");
}

}  // namespace
}  // namespace titan::ckpt
