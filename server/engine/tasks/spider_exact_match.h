// Spider's exact-set match (evaluation.py, etype "match"): both queries are parsed against the schema,
// values are dropped, DISTINCT is ignored, foreign-key columns are mapped to one representative, and
// every component (select, where, group, having, order, and/or, intersect/union/except, keywords, the
// FROM tables) must agree as a set.
#pragma once

#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "server/engine/tasks/spider_schema.h"
#include "server/engine/tasks/spider_sql_parser.h"

namespace statetune::tasks {

struct SpiderMatch {
  bool exact = false;
  bool prediction_parsed = true;  // false: the prediction was scored as the empty query
  bool gold_parsed = true;        // false: the gold could not be parsed (counted as a miss)
  std::string error;              // the parse error, if any
};

// One prediction against one gold query of database `schema`.
SpiderMatch spider_exact_match(std::string_view prediction, std::string_view gold, const SpiderSchema& schema);

// Both parsed already (what evaluation.py does after get_sql): the official comparison.
bool spider_exact_match(const spider::Sql& prediction, const spider::Sql& gold, const SpiderSchema& schema);

struct SpiderCorpusMatch {
  double exact_match = 0;  // fraction of examples with exact-set match
  size_t examples = 0;
  size_t prediction_parse_failures = 0;
  size_t gold_parse_failures = 0;
};

// predictions[i] against golds[i] on database db_ids[i]. Throws on size mismatch or an unknown db_id.
SpiderCorpusMatch spider_corpus_exact_match(const std::vector<std::string>& predictions,
                                            const std::vector<std::string>& golds,
                                            const std::vector<std::string>& db_ids, const SpiderSchemaSet& schemas);

}  // namespace statetune::tasks
