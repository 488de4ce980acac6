#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "esphome/components/uart/uart.h"
#include "esphome/core/automation.h"
#include "esphome/core/component.h"
#include "esphome/core/helpers.h"

namespace esphome::esc_bridge {

class LinesTrigger : public Trigger<std::string> {};

/// Reads an ESC telemetry UART and emits the hub's bridge lines (esc-telemetry spec §5).
///
/// Bytes are cut into chunks at idle gaps (or at max_chunk bytes); each chunk becomes one
/// `raw` line stamped with the time its first byte was read. Lines are batched for
/// flush_interval (or max_payload bytes) and handed to the on_lines triggers.
class EscBridge : public Component, public uart::UARTDevice {
 public:
  void setup() override;
  void loop() override;
  void dump_config() override;
  float get_setup_priority() const override { return setup_priority::DATA; }

  void set_source(const std::string &source) { this->source_ = source; }
  void set_protocol(const std::string &protocol) { this->protocol_ = protocol; }
  void set_idle_gap_us(uint32_t gap) { this->idle_gap_us_ = gap; }
  void set_max_chunk(size_t size) { this->max_chunk_ = size; }
  void set_flush_interval_ms(uint32_t interval) { this->flush_interval_ms_ = interval; }
  void set_max_payload(size_t size) { this->max_payload_ = size; }
  void set_stats_interval_ms(uint32_t interval) { this->stats_interval_ms_ = interval; }
  void add_lines_trigger(LinesTrigger *trigger) { this->triggers_.push_back(trigger); }

  /// Queue a `hello` line (firmware, protocol, baud); call it on every MQTT (re)connect.
  void send_hello();

 protected:
  uint64_t now_us_();
  void end_chunk_();
  void queue_line_(const std::string &line);
  void flush_lines_();
  std::string head_(const char *kind, uint64_t t_us) const;

  std::string source_{"esc0"};
  std::string protocol_;
  uint32_t idle_gap_us_{3000};
  size_t max_chunk_{64};
  uint32_t flush_interval_ms_{100};
  size_t max_payload_{1024};
  uint32_t stats_interval_ms_{10000};
  std::vector<LinesTrigger *> triggers_;

  // 64-bit microsecond clock built from the wrapping 32-bit micros().
  uint32_t last_micros_{0};
  uint64_t micros_high_{0};

  std::vector<uint8_t> chunk_;
  uint64_t chunk_start_us_{0};
  uint64_t last_byte_us_{0};
  std::string pending_;
  uint32_t pending_since_ms_{0};
  uint32_t last_stats_ms_{0};

  uint32_t seq_{0};
  uint32_t bytes_{0};
  uint32_t chunks_{0};
  uint32_t payloads_{0};

  HighFrequencyLoopRequester high_freq_;
};

}  // namespace esphome::esc_bridge
