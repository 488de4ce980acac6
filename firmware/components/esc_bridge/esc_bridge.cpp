#include "esc_bridge.h"

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <cstring>

#include "esphome/core/hal.h"
#include "esphome/core/log.h"

namespace esphome::esc_bridge {

static const char *const TAG = "esc_bridge";
static const char *const BRIDGE_FIRMWARE = "esphome-esc_bridge/1";
static const char HEX_DIGITS[] = "0123456789ABCDEF";

void EscBridge::setup() {
  // Gap detection needs a loop faster than ESPHome's default 16 ms pace.
  this->high_freq_.start();
  this->last_stats_ms_ = millis();
  this->send_hello();
}

uint64_t EscBridge::now_us_() {
  uint32_t now = micros();
  if (now < this->last_micros_)
    this->micros_high_ += (uint64_t{1} << 32);
  this->last_micros_ = now;
  return this->micros_high_ | now;
}

std::string EscBridge::head_(const char *kind, uint64_t t_us) const {
  char buf[96];
  snprintf(buf, sizeof(buf), "{\"v\":1,\"t_us\":%" PRIu64 ",\"src\":\"%s\"", t_us,
           strcmp(kind, "raw") == 0 ? this->source_.c_str() : "bridge");
  return buf;
}

void EscBridge::send_hello() {
  char buf[160];
  snprintf(buf, sizeof(buf), ",\"evt\":\"hello\",\"fw\":\"%s\",\"esc\":\"%s\",\"proto\":\"%s\",\"baud\":%" PRIu32 "}\n",
           BRIDGE_FIRMWARE, this->source_.c_str(), this->protocol_.c_str(), this->parent_->get_baud_rate());
  this->queue_line_(this->head_("evt", this->now_us_()) + buf);
}

void EscBridge::loop() {
  uint64_t now = this->now_us_();
  uint8_t buf[64];
  size_t avail;
  while ((avail = this->available()) > 0) {
    size_t room = this->max_chunk_ - this->chunk_.size();
    size_t n = std::min({avail, sizeof(buf), room});
    if (!this->read_array(buf, n))
      break;
    if (this->chunk_.empty())
      this->chunk_start_us_ = now;
    this->chunk_.insert(this->chunk_.end(), buf, buf + n);
    this->last_byte_us_ = now;
    this->bytes_ += n;
    if (this->chunk_.size() >= this->max_chunk_)
      this->end_chunk_();
  }
  if (!this->chunk_.empty() && now - this->last_byte_us_ >= this->idle_gap_us_)
    this->end_chunk_();

  uint32_t now_ms = millis();
  if (this->stats_interval_ms_ > 0 && now_ms - this->last_stats_ms_ >= this->stats_interval_ms_) {
    this->last_stats_ms_ = now_ms;
    char stats[160];
    snprintf(stats, sizeof(stats),
             ",\"evt\":\"stats\",\"esc\":\"%s\",\"bytes\":%" PRIu32 ",\"chunks\":%" PRIu32 ",\"payloads\":%" PRIu32
             "}\n",
             this->source_.c_str(), this->bytes_, this->chunks_, this->payloads_);
    this->queue_line_(this->head_("evt", now) + stats);
  }
  if (!this->pending_.empty() && now_ms - this->pending_since_ms_ >= this->flush_interval_ms_)
    this->flush_lines_();
}

void EscBridge::end_chunk_() {
  std::string line = this->head_("raw", this->chunk_start_us_);
  char seq[48];
  snprintf(seq, sizeof(seq), ",\"seq\":%" PRIu32 ",\"proto\":\"", this->seq_++);
  line += seq;
  line += this->protocol_;
  line += "\",\"raw\":\"";
  for (uint8_t byte : this->chunk_) {
    line += HEX_DIGITS[byte >> 4];
    line += HEX_DIGITS[byte & 0x0F];
  }
  line += "\"}\n";
  this->chunk_.clear();
  this->chunks_++;
  this->queue_line_(line);
}

void EscBridge::queue_line_(const std::string &line) {
  if (!this->pending_.empty() && this->pending_.size() + line.size() > this->max_payload_)
    this->flush_lines_();
  if (this->pending_.empty())
    this->pending_since_ms_ = millis();
  this->pending_ += line;
}

void EscBridge::flush_lines_() {
  if (this->pending_.empty())
    return;
  std::string lines;
  lines.swap(this->pending_);
  this->payloads_++;
  for (auto *trigger : this->triggers_)
    trigger->trigger(lines);
}

void EscBridge::dump_config() {
  ESP_LOGCONFIG(TAG,
                "ESC bridge:\n"
                "  Source: %s\n"
                "  Protocol: %s\n"
                "  Idle gap: %" PRIu32 " us\n"
                "  Max chunk: %u bytes\n"
                "  Flush interval: %" PRIu32 " ms",
                this->source_.c_str(), this->protocol_.c_str(), this->idle_gap_us_, (unsigned) this->max_chunk_,
                this->flush_interval_ms_);
}

}  // namespace esphome::esc_bridge
