// docs/config.md is the project's one list of keys (docs/design.md): its tables must say what
// the program says, key by key: name, type, default and allowed values, and which features
// are missing. A failure prints the row the program expects.
#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <sstream>

#include "titan/build_config.h"
#include "titan/config/fields.h"
#include "support/train_process.h"

namespace titan::config {
namespace {

std::string trim(const std::string& text) {
  const size_t first = text.find_first_not_of(" \t");
  if (first == std::string::npos) return "";
  return text.substr(first, text.find_last_not_of(" \t") - first + 1);
}

std::string strip_backticks(std::string text) {
  std::string out;
  for (const char ch : text) {
    if (ch != '`') out += ch;
  }
  return out;
}

std::vector<std::string> cells(const std::string& row) {
  std::vector<std::string> out;
  std::stringstream stream(row.substr(1));  // past the leading '|'
  for (std::string cell; std::getline(stream, cell, '|');) out.push_back(trim(cell));
  return out;
}

// Rows of every table whose header starts with `first_column`, keyed by their first cell.
std::map<std::string, std::vector<std::string>> table_rows(const std::string& first_column) {
  std::ifstream file(testing::source_path("docs/config.md"));
  EXPECT_TRUE(file.good()) << "docs/config.md is missing";
  std::map<std::string, std::vector<std::string>> rows;
  bool inside = false;
  for (std::string line; std::getline(file, line);) {
    if (line.rfind("|", 0) != 0) {
      inside = false;
      continue;
    }
    const std::vector<std::string> row = cells(line);
    if (row.empty()) continue;
    if (!inside) {
      inside = row[0] == first_column;  // a header row
      continue;
    }
    if (row[0].rfind("---", 0) == 0) continue;
    const std::string key = strip_backticks(row[0]);
    EXPECT_FALSE(rows.count(key)) << "docs/config.md lists " << key << " twice";
    rows[key] = row;
  }
  return rows;
}

std::string expected_row(const Field& field) {
  return "| `" + field.name + "` | " + field.type_name() + " | `" +
         format_plain(field.default_value()) + "` | " + field.allowed_text() + " | " +
         field.help + " |";
}

TEST(ConfigDoc, ListsEveryKeyWithTheProgramsTypeDefaultAndAllowedValues) {
  auto rows = table_rows("key");
  for (const Field& field : job_config_fields()) {
    SCOPED_TRACE(field.name);
    const auto found = rows.find(field.name);
    if (found == rows.end()) {
      ADD_FAILURE() << "docs/config.md has no row for " << field.name
                    << "; add:\n" << expected_row(field);
      continue;
    }
    const std::vector<std::string>& row = found->second;
    ASSERT_GE(row.size(), 5u) << "columns: key | type | default | allowed | meaning";
    EXPECT_EQ(row[1], field.type_name()) << "expected row:\n" << expected_row(field);
    EXPECT_EQ(strip_backticks(row[2]), format_plain(field.default_value()))
        << "expected row:\n" << expected_row(field);
    EXPECT_EQ(strip_backticks(row[3]), field.allowed_text())
        << "expected row:\n" << expected_row(field);
    EXPECT_FALSE(row[4].empty()) << "no meaning given";
    rows.erase(found);
  }
  for (const auto& [key, row] : rows) {
    ADD_FAILURE() << "docs/config.md lists " << key << ", which JobConfig does not have";
  }
}

TEST(ConfigDoc, ListsExactlyTheFeaturesNotBuiltYet) {
  auto rows = table_rows("feature");
  for (const FeatureInfo& info : all_features()) {
    // The page describes the default build; one without HDF5 lacks checkpoints, which the
    // page says in prose rather than as rows.
    const bool checkpoints = info.feature == Feature::Checkpointing ||
                             info.feature == Feature::AsyncCheckpointing;
    if (!TITAN_HAVE_HDF5 && checkpoints) continue;
    if (info.built) {
      EXPECT_FALSE(rows.count(info.name)) << info.name << " is built: drop its row";
      continue;
    }
    const auto found = rows.find(info.name);
    if (found == rows.end()) {
      ADD_FAILURE() << "docs/config.md does not list the missing feature " << info.name;
      continue;
    }
    for (const Field& field : job_config_fields()) {
      if (field.feature != info.feature) continue;
      EXPECT_NE(found->second.at(1).find("`" + field.name + "` (" + field.feature_off + ")"),
                std::string::npos)
          << info.name << ": expected `" << field.name << "` (" << field.feature_off << ")";
    }
    rows.erase(found);
  }
  for (const auto& [name, row] : rows) {
    ADD_FAILURE() << "docs/config.md lists " << name << ", which is not a missing feature";
  }
}

}  // namespace
}  // namespace titan::config
