#include "titan/metrics/memory_snapshot.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

namespace titan::metrics {
namespace {

nlohmann::json usage_json(const std::vector<TagUsage>& usage) {
  nlohmann::json list = nlohmann::json::array();
  for (const TagUsage& u : usage) {
    list.push_back({{"tag", u.tag}, {"bytes", u.bytes}, {"allocations", u.allocations}});
  }
  return list;
}

}  // namespace

std::string memory_snapshot_json(const Allocator& allocator, const MemorySnapshotInfo& info) {
  // Read the peak's make-up and the counters together enough for the sums to agree: the
  // snapshot is taken between steps, when no other thread allocates on this device.
  const MemoryStats stats = allocator.stats();
  std::ostringstream device;
  device << allocator.device();
  const nlohmann::json snapshot = {
      {"format", "titan.memory_snapshot"},
      {"version", 1},
      {"rank", info.rank},
      {"device", device.str()},
      {"step", info.step},
      {"reason", info.reason},
      {"peak_steps", {info.peak_first_step, info.peak_last_step}},
      {"peak_bytes", stats.peak_bytes},
      {"current_bytes", stats.current_bytes},
      {"cached_bytes", stats.cached_bytes},
      {"system_allocations", stats.system_allocations},
      {"at_peak", usage_json(allocator.usage_at_peak())},
      {"now", usage_json(allocator.usage_now())},
  };
  return snapshot.dump(1);
}

void write_memory_snapshot(const std::string& path, const Allocator& allocator,
                           const MemorySnapshotInfo& info) {
  const std::string json = memory_snapshot_json(allocator, info);
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  std::ofstream out(path);
  TITAN_CHECK(bool(out)) << "cannot write the memory snapshot " << path;
  out << json << "\n";
  TITAN_CHECK(bool(out)) << "could not finish writing the memory snapshot " << path;
}

}  // namespace titan::metrics
