// The rules of the source tree (docs/architecture.md, "Rooms"), read off the files
// themselves: which room may include which, that MPI, NCCL and HDF5 stay in their backend
// folders, and that the project points at nothing outside the repository.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

namespace titan::testing {
namespace {

namespace fs = std::filesystem;

const fs::path kRoot = TITAN_SOURCE_DIR;

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

bool is_source(const fs::path& path) {
  const std::string ext = path.extension().string();
  return ext == ".h" || ext == ".cpp" || ext == ".cu" || ext == ".cuh";
}

// Every source file under `folder` (relative to the repository), by its relative path.
std::vector<std::string> sources_under(const std::string& folder) {
  std::vector<std::string> files;
  for (const fs::directory_entry& entry : fs::recursive_directory_iterator(kRoot / folder)) {
    if (entry.is_regular_file() && is_source(entry.path())) {
      files.push_back(fs::relative(entry.path(), kRoot).generic_string());
    }
  }
  return files;
}

// The project headers a file includes ("titan/ops/matmul.h") and the system headers.
struct Includes {
  std::vector<std::string> project, system;
};

Includes includes_of(const std::string& file) {
  static const std::regex include(R"(^\s*#\s*include\s*([<"])([^>"]+)[>"])");
  Includes found;
  std::istringstream lines(read_file(kRoot / file));
  for (std::string line; std::getline(lines, line);) {
    std::smatch m;
    if (!std::regex_search(line, m, include)) continue;
    if (m[1] == "<") {
      found.system.push_back(m[2]);
    } else if (m[2].str().rfind("titan/", 0) == 0) {
      found.project.push_back(m[2]);
    }
  }
  return found;
}

// "lib/titan/ops/cpu/matmul.cpp" and "titan/ops/matmul.h" -> "ops"; a file at the top
// (titan/build_config.h) -> "".
std::string room_of(const std::string& path) {
  const size_t at = path.find("titan/");
  const std::string rest = path.substr(at + 6);
  const size_t slash = rest.find('/');
  return slash == std::string::npos ? "" : rest.substr(0, slash);
}

// Which rooms each room may include besides itself: a room knows the rooms below it.
const std::map<std::string, std::set<std::string>>& room_rules() {
  static const std::map<std::string, std::set<std::string>> rules = {
      {"core", {}},
      {"config", {"core"}},
      {"ops", {"core"}},
      {"nn", {"core", "ops"}},
      {"data", {"core", "config"}},
      {"metrics", {"core", "config"}},
      {"models", {"core", "config", "ops", "nn"}},
      {"distributed", {"core", "config", "ops", "nn"}},
      {"ckpt", {"core", "config", "ops", "nn", "models", "distributed"}},
      {"infer", {"core", "config", "ops", "nn", "models", "distributed", "ckpt", "data"}},
      {"train", {"core", "config", "ops", "nn", "models", "distributed", "ckpt", "data",
                 "metrics"}},
      {"app", {"core", "config", "ops", "nn", "models", "distributed", "ckpt", "data",
               "metrics", "infer", "train"}},
  };
  return rules;
}

TEST(IncludeRules, EveryRoomIncludesOnlyTheRoomsBelowIt) {
  const auto& rules = room_rules();
  for (const std::string& file : sources_under("lib/titan")) {
    const std::string room = room_of(file);
    if (room.empty()) continue;
    const auto rule = rules.find(room);
    ASSERT_NE(rule, rules.end()) << file << " is in a room the rules do not know: " << room;
    for (const std::string& header : includes_of(file).project) {
      const std::string to = room_of(header);
      EXPECT_TRUE(to.empty() || to == room || rule->second.count(to) > 0)
          << file << " (room " << room << ") includes " << header;
    }
  }
}

TEST(IncludeRules, NothingBelowTrainIncludesMetrics) {
  for (const std::string& file : sources_under("lib/titan")) {
    const std::string room = room_of(file);
    if (room == "metrics" || room == "train" || room == "app") continue;
    for (const std::string& header : includes_of(file).project) {
      EXPECT_NE(room_of(header), "metrics") << file << " includes " << header;
    }
  }
}

// Outside distributed/mpi, distributed/nccl and ckpt/hdf5, no file of the library or the
// programs includes mpi.h, nccl.h or hdf5.h (whose parallel build includes mpi.h), directly
// or through a project header.
TEST(IncludeRules, MpiNcclAndHdf5StayInTheirBackends) {
  const std::set<std::string> backend_headers = {"mpi.h", "nccl.h", "hdf5.h"};
  const std::vector<std::string> backends = {
      "lib/titan/distributed/mpi/", "lib/titan/distributed/nccl/", "lib/titan/ckpt/hdf5/"};
  std::map<std::string, Includes> graph;
  std::vector<std::string> files = sources_under("lib/titan");
  for (const std::string& app : sources_under("apps")) files.push_back(app);
  for (const std::string& file : files) graph[file] = includes_of(file);
  // The backend header a file reaches, through the chain of project headers that lead to it.
  std::map<std::string, std::string> reached;
  std::function<std::string(const std::string&, std::set<std::string>&)> reach =
      [&](const std::string& file, std::set<std::string>& seen) -> std::string {
    if (const auto done = reached.find(file); done != reached.end()) return done->second;
    if (!seen.insert(file).second) return "";
    std::string chain;
    for (const std::string& header : graph[file].system) {
      if (backend_headers.count(header)) chain = "<" + header + ">";
    }
    for (const std::string& header : graph[file].project) {
      if (!chain.empty()) break;
      const std::string next = "lib/" + header;
      if (!graph.count(next)) continue;
      const std::string below = reach(next, seen);
      if (!below.empty()) chain = header + " -> " + below;
    }
    reached[file] = chain;
    return chain;
  };
  int checked = 0;
  for (const std::string& file : files) {
    bool in_backend = false;
    for (const std::string& folder : backends) in_backend |= file.rfind(folder, 0) == 0;
    if (in_backend) continue;
    std::set<std::string> seen;
    EXPECT_EQ(reach(file, seen), "") << file << " reaches a backend's header";
    ++checked;
  }
  EXPECT_GT(checked, 100);
}

// The code and the docs rely on nothing a reader of the repository does not have: no
// pointer at design notes kept outside it, no script from beside it.
TEST(SelfContained, NoFilePointsOutsideTheRepository) {
  // Spelled in pieces, so that this file does not match itself.
  const std::vector<std::string> outside = {
      std::string("DESIGN") + ".md", std::string("STYLE") + ".md", std::string("../") + "shared",
      "notes" + std::string("/")};
  const std::set<std::string> text_ext = {".h",   ".cpp",   ".cu", ".cuh", ".md",  ".sh",
                                          ".py",  ".txt",   ".yaml", ".cmake", ".in", ".mjs",
                                          ".cjs", ".sbatch", ""};
  int checked = 0;
  for (const char* folder : {"lib", "apps", "test", "tools", "docs", "configs", "jobscripts",
                             "cmake", ".ci"}) {
    if (!fs::exists(kRoot / folder)) continue;
    for (const fs::directory_entry& entry : fs::recursive_directory_iterator(kRoot / folder)) {
      const std::string ext = entry.path().extension().string();
      if (!entry.is_regular_file() || !text_ext.count(ext)) continue;
      if (entry.path().string().find("/golden/") != std::string::npos) continue;
      const std::string text = read_file(entry.path());
      for (const std::string& pointer : outside) {
        EXPECT_EQ(text.find(pointer), std::string::npos)
            << fs::relative(entry.path(), kRoot).generic_string() << " points at " << pointer;
      }
      ++checked;
    }
  }
  for (const char* file : {"README.md", "CMakeLists.txt", "run_tests.sh", "run_train.sh"}) {
    const std::string text = read_file(kRoot / file);
    for (const std::string& pointer : outside) {
      EXPECT_EQ(text.find(pointer), std::string::npos) << file << " points at " << pointer;
    }
    ++checked;
  }
  EXPECT_GT(checked, 200);
}

}  // namespace
}  // namespace titan::testing
