// Every task metric of the library: include this to score predictions.
#pragma once

#include "server/engine/tasks/bleu.h"                    // corpus / sentence BLEU (sacrebleu)
#include "server/engine/tasks/classification_metrics.h"  // accuracy, Matthews correlation, binary F1
#include "server/engine/tasks/rouge.h"                   // ROUGE-1/2/L (rouge_score)
#include "server/engine/tasks/spider_exact_match.h"      // Spider exact-set match
#include "server/engine/tasks/task_metric.h"             // the metrics map of a task
