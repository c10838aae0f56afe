#include "server/engine/tasks/spider_exact_match.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "server/engine/tasks/text_files.h"
#include "test_paths.h"

namespace statetune::tasks {
namespace {

// The concert_singer schema of tables.json, reduced to what the cases below use. Foreign keys:
// concert.Stadium_ID -> stadium.Stadium_ID, singer_in_concert.Singer_ID -> singer.Singer_ID.
SpiderSchema concert_singer() {
  SpiderSchema s;
  s.db_id = "concert_singer";
  s.table_names = {"stadium", "singer", "concert", "singer_in_concert"};
  s.columns = {{-1, "*", "text"},         {0, "Stadium_ID", "number"}, {0, "Name", "text"},
               {0, "Capacity", "number"}, {1, "Singer_ID", "number"},  {1, "Name", "text"},
               {1, "Country", "text"},    {1, "Age", "number"},        {2, "concert_ID", "number"},
               {2, "concert_Name", "text"}, {2, "Stadium_ID", "number"}, {2, "Year", "text"},
               {3, "concert_ID", "number"}, {3, "Singer_ID", "number"}};
  s.primary_keys = {1, 4, 8, 12};
  s.foreign_keys = {{10, 1}, {13, 4}, {12, 8}};
  return s;
}

bool match(const std::string& pred, const std::string& gold) {
  return spider_exact_match(pred, gold, concert_singer()).exact;
}

TEST(SpiderSql, TokenizerKeepsLiteralsAndJoinsOperators) {
  EXPECT_EQ(spider::tokenize_sql("SELECT count(*) FROM singer WHERE Name != 'Joe Sharp' AND age>= 5;"),
            (std::vector<std::string>{"select", "count", "(", "*", ")", "from", "singer", "where", "name", "!=",
                                      "\"Joe Sharp\"", "and", "age", ">=", "5", ";"}));
  // As NLTK's tokenizer, "=" is not split from a following word, so "age>=5" keeps "=5" (and fails to parse).
  EXPECT_EQ(spider::tokenize_sql("age>=5"), (std::vector<std::string>{"age", ">", "=5"}));
  EXPECT_THROW(spider::tokenize_sql("SELECT 'unbalanced FROM t"), spider::SqlParseError);
}

TEST(SpiderSql, ParsesIntoTheOfficialStructure) {
  const auto sql = spider::parse_sql(
      "SELECT T2.name, count(*) FROM concert AS T1 JOIN stadium AS T2 ON T1.stadium_id = T2.stadium_id "
      "WHERE T1.year > 2013 GROUP BY T1.stadium_id ORDER BY count(*) DESC LIMIT 1",
      concert_singer());
  // Hand-written from process_sql.py's grammar; ids are indices of the columns/tables above.
  const auto expected = nlohmann::json::parse(R"({
    "select": [false, [[0, [0, [0, 2, false], null]], [3, [0, [0, 0, false], null]]]],
    "from": {"table_units": [["table_unit", 2], ["table_unit", 0]],
             "conds": [[false, 2, [0, [0, 10, false], null], [0, 1, false], null]]},
    "where": [[false, 3, [0, [0, 11, false], null], 2013.0, null]],
    "groupBy": [[0, 10, false]], "having": [],
    "orderBy": ["desc", [[0, [3, 0, false], null]]], "limit": 1,
    "intersect": null, "union": null, "except": null})");
  EXPECT_EQ(spider::to_spider_json(sql, concert_singer()), expected);
}

TEST(SpiderExactMatch, HandMadeCases) {
  const std::string gold = "SELECT name, age FROM singer WHERE age > 20 ORDER BY age DESC LIMIT 3";
  EXPECT_TRUE(match(gold, gold));
  // Values, select order, DISTINCT, case, aliases and whitespace do not matter.
  EXPECT_TRUE(match("select DISTINCT T1.age ,  T1.name from SINGER as T1 where T1.age > 99 order by T1.age desc limit 1",
                    gold));
  // Each of these changes one component: 0.
  EXPECT_FALSE(match("SELECT name, age FROM singer WHERE age < 20 ORDER BY age DESC LIMIT 3", gold));  // operator
  EXPECT_FALSE(match("SELECT name, age FROM singer WHERE age > 20 ORDER BY age ASC LIMIT 3", gold));   // direction
  EXPECT_FALSE(match("SELECT name, age FROM singer WHERE age > 20 ORDER BY age DESC", gold));          // no LIMIT
  EXPECT_FALSE(match("SELECT name FROM singer WHERE age > 20 ORDER BY age DESC LIMIT 3", gold));       // column
  EXPECT_FALSE(match("SELECT name, max(age) FROM singer WHERE age > 20 ORDER BY age DESC LIMIT 3", gold));  // agg
  EXPECT_FALSE(match("SELECT name, age FROM singer ORDER BY age DESC LIMIT 3", gold));                 // no WHERE
  EXPECT_FALSE(match("SELECT name, age FROM singer WHERE age > 20 OR age < 5 ORDER BY age DESC LIMIT 3", gold));
  EXPECT_FALSE(match("SELECT name FROM stadium", "SELECT name FROM singer"));                         // table
  EXPECT_FALSE(match("SELECT name FROM singer INTERSECT SELECT name FROM singer",
                     "SELECT name FROM singer UNION SELECT name FROM singer"));
  EXPECT_FALSE(match("SELECT name FROM singer WHERE singer_id NOT IN (SELECT singer_id FROM singer_in_concert)",
                     "SELECT name FROM singer WHERE singer_id IN (SELECT singer_id FROM singer_in_concert)"));
}

TEST(SpiderExactMatch, ForeignKeyColumnsAreInterchangeable) {
  const std::string join = "SELECT T2.name FROM concert AS T1 JOIN stadium AS T2 ON T1.stadium_id = T2.stadium_id ";
  // concert.Stadium_ID and stadium.Stadium_ID are one foreign key: grouping by either is the same query.
  EXPECT_TRUE(match(join + "GROUP BY T2.stadium_id", join + "GROUP BY T1.stadium_id"));
  // stadium.Name is not: same column name in the group (no having) check, different column in the group check.
  EXPECT_FALSE(match(join + "GROUP BY T2.name", join + "GROUP BY T1.stadium_id"));
}

TEST(SpiderExactMatch, UnparsablePredictionScoresZero) {
  const SpiderMatch m = spider_exact_match("SELEC name singer", "SELECT name FROM singer", concert_singer());
  EXPECT_FALSE(m.exact);
  EXPECT_FALSE(m.prediction_parsed);
  EXPECT_TRUE(m.gold_parsed);
  // The official parser does not accept comma joins, unknown columns or an alias named like a table.
  EXPECT_FALSE(spider_exact_match("SELECT name FROM singer, stadium", "SELECT name FROM singer", concert_singer())
                   .prediction_parsed);
  EXPECT_FALSE(spider_exact_match("SELECT height FROM singer", "SELECT name FROM singer", concert_singer())
                   .prediction_parsed);
  EXPECT_FALSE(spider_exact_match("SELECT name FROM singer AS stadium", "SELECT name FROM singer", concert_singer())
                   .prediction_parsed);
}

// Every gold query of the official dev set must parse, reproduce the structure the Spider authors stored
// in dev.json's "sql" field, and match itself exactly.
TEST(SpiderExactMatch, OfficialDevSetParsesAndMatchesItself) {
  STATETUNE_SKIP_WITHOUT_DATASETS();
  const std::string dir = testing::datasets_dir() + "/spider";
  const SpiderSchemaSet schemas = SpiderSchemaSet::load(dir + "/tables.json");
  ASSERT_EQ(schemas.size(), 166u);
  const auto dev = nlohmann::json::parse(read_text_file(dir + "/dev.json"));
  ASSERT_EQ(dev.size(), 1034u);
  size_t parsed = 0, same_structure = 0;
  std::vector<std::string> golds, db_ids;
  for (const auto& item : dev) {
    const std::string query = item.at("query").get<std::string>();
    const SpiderSchema& schema = schemas.at(item.at("db_id").get<std::string>());
    golds.push_back(query);
    db_ids.push_back(schema.db_id);
    try {
      const spider::Sql sql = spider::parse_sql(query, schema);
      ++parsed;
      if (spider::to_spider_json(sql, schema) == item.at("sql")) {
        ++same_structure;
      } else {
        ADD_FAILURE() << "structure differs from dev.json for: " << query << "\nours:     "
                      << spider::to_spider_json(sql, schema).dump() << "\nofficial: " << item.at("sql").dump();
      }
    } catch (const spider::SqlParseError& e) {
      ADD_FAILURE() << "cannot parse gold query: " << query << " (" << e.what() << ")";
    }
  }
  EXPECT_EQ(parsed, dev.size());
  EXPECT_EQ(same_structure, dev.size());
  const SpiderCorpusMatch self = spider_corpus_exact_match(golds, golds, db_ids, schemas);
  EXPECT_DOUBLE_EQ(self.exact_match, 1.0);
  EXPECT_EQ(self.gold_parse_failures, 0u);
}

}  // namespace
}  // namespace statetune::tasks
