// The virtual board under Verilator: the Accelerator's byte streams bridged to a TCP socket, no Python in
// the loop.
//
//     board PORT FRAME_TIMEOUT_MS [STATS_FILE [SEED]]
//
// Connects to 127.0.0.1:PORT (sim.server's private bridge port), resets the design, then moves bytes:
// socket -> `rx` (one byte per cycle while the device takes them), `tx` -> socket (`tx` always ready). The
// clock runs while the device is busy (a frame half received, a request being served, an answer being
// sent) or input is waiting; when the device is idle and no byte is waiting, the harness blocks on the
// socket and the clock stops, since nothing in an idle device counts time. A stalled device keeps the
// clock running, so its frame timeout means what it means on a board: that many cycles without a byte.
// The simulated clock runs far slower than a board's, though, so the harness also pulses `expire` when the
// host has sent nothing for FRAME_TIMEOUT_MS of real time: a frame the host abandoned half sent is dropped
// as soon as a board would drop it (outside a frame the pulse does nothing).
// Writes {"cycles", "seconds", "sim_seconds"} to STATS_FILE at the end (sim_seconds: time not spent
// waiting for the host). With SEED the link stutters as the cocotb testbenches' drivers do: a random idle
// cycle before each input byte (probability 0.3, repeated) and `tx` not ready at random (probability 0.4).
//
// The top module is compiled with `--prefix Vboard`; its ports are the Accelerator's: clk, rst,
// rx__valid/ready/payload, tx__valid/ready/payload, busy, expire.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <memory>
#include <optional>
#include <random>
#include <vector>

#include "Vboard.h"
#include "verilated.h"

// Verilator escapes a double underscore in a port name as `___05F`: Amaranth's `rx__valid` is `rx___05Fvalid`.
#define RX__VALID rx___05Fvalid
#define RX__READY rx___05Fready
#define RX__PAYLOAD rx___05Fpayload
#define TX__VALID tx___05Fvalid
#define TX__READY tx___05Fready
#define TX__PAYLOAD tx___05Fpayload

namespace {

// Cycles between looks at the socket while no input is waiting (the device computing, or the rest of a
// frame still in flight): a syscall per few hundred cycles costs little next to the model, and a host byte
// waits at most that long, far inside any frame timeout.
constexpr uint64_t POLL_INTERVAL = 256;
constexpr size_t READ_CHUNK = 65536;

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
    return std::chrono::duration<double>(Clock::now() - start).count();
}

[[noreturn]] void fail(const char* what) {
    std::fprintf(stderr, "board: %s: %s\n", what, std::strerror(errno));
    std::exit(1);
}

int connect_loopback(int port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) fail("socket");
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(static_cast<uint16_t>(port));
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) < 0) fail("connect");
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

class Bridge {
  public:
    Bridge(int fd, Vboard& top, Clock::duration frame_timeout, std::optional<uint32_t> seed)
        : fd_(fd), top_(top), frame_timeout_(frame_timeout), stress_(seed.has_value()) {
        if (seed) rng_.seed(*seed);
    }

    // Reads what the socket holds into `pending_`, waiting up to `timeout_ms` (-1: forever); false once
    // the host has gone.
    bool receive(int timeout_ms) {
        pollfd p{fd_, POLLIN, 0};
        int ready = poll(&p, 1, timeout_ms);
        if (ready < 0) {
            if (errno == EINTR) return true;
            fail("poll");
        }
        if (ready == 0) return true;
        uint8_t buffer[READ_CHUNK];
        ssize_t got = recv(fd_, buffer, sizeof buffer, 0);
        if (got < 0) {
            if (errno == EINTR || errno == EAGAIN) return true;
            if (errno == ECONNRESET) return false;
            fail("recv");
        }
        if (got == 0) return false;
        pending_.insert(pending_.end(), buffer, buffer + got);
        last_input_ = Clock::now();
        return true;
    }

    bool flush() {
        size_t sent = 0;
        while (sent < outgoing_.size()) {
            ssize_t n = send(fd_, outgoing_.data() + sent, outgoing_.size() - sent, MSG_NOSIGNAL);
            if (n < 0) {
                if (errno == EINTR) continue;
                return false;  // the host left mid-answer: nobody to answer
            }
            sent += static_cast<size_t>(n);
        }
        outgoing_.clear();
        return true;
    }

    // One clock cycle: offer a waiting byte on rx (held until taken), take what tx offers, sample both
    // handshakes before the edge (where the flip-flops see them).
    void step() {
        if (!offering_ && !pending_.empty()) offering_ = !stress_ || !coin(GAP_PROBABILITY);
        top_.RX__VALID = offering_;
        top_.RX__PAYLOAD = offering_ ? pending_.front() : 0;
        top_.TX__READY = !stress_ || !coin(STALL_PROBABILITY);
        top_.expire = expire_;
        expire_ = false;
        top_.clk = 0;
        top_.eval();
        const bool took = offering_ && top_.RX__READY;
        const bool gave = top_.TX__VALID && top_.TX__READY;
        const uint8_t byte = top_.TX__PAYLOAD;
        top_.clk = 1;
        top_.eval();
        if (took) {
            pending_.pop_front();
            offering_ = false;
        }
        if (gave) outgoing_.push_back(byte);
        sent_this_cycle_ = gave;
        ++cycles_;
    }

    void reset() {
        top_.RX__VALID = 0;
        top_.TX__READY = 0;
        top_.expire = 0;
        top_.rst = 1;
        for (int i = 0; i < 2; ++i) {
            top_.clk = 0;
            top_.eval();
            top_.clk = 1;
            top_.eval();
        }
        top_.rst = 0;
    }

    // Runs until the host leaves; returns the seconds spent simulating (not waiting for the host).
    double serve() {
        double simulating = 0.0;
        uint64_t since_poll = 0;
        for (;;) {
            // Settle the outputs for the inputs of an idle cycle to see whether the device is idle.
            top_.RX__VALID = 0;
            top_.TX__READY = 1;
            top_.expire = 0;
            top_.clk = 0;
            top_.eval();
            if (pending_.empty() && !top_.busy && !top_.TX__VALID) {
                if (!outgoing_.empty() && !flush()) return simulating;
                if (!receive(-1)) return simulating;
                continue;
            }
            auto burst = Clock::now();
            // Simulate until idle again, looking at the socket now and then.
            while (!pending_.empty() || top_.busy || top_.TX__VALID) {
                step();
                if (!sent_this_cycle_ && !outgoing_.empty() && !flush()) return simulating + seconds_since(burst);
                if (pending_.empty() && ++since_poll >= POLL_INTERVAL) {
                    since_poll = 0;
                    if (!receive(0)) return simulating + seconds_since(burst);
                    const auto now = Clock::now();
                    if (pending_.empty() && now - last_input_ >= frame_timeout_) {
                        expire_ = true;  // the host has been silent for the frame timeout: as on a board
                        last_input_ = now;
                    }
                }
                // `busy` and `tx.valid` depend on the state alone: the rising edge's eval has updated them.
            }
            simulating += seconds_since(burst);
        }
    }

    uint64_t cycles() const { return cycles_; }

  private:
    static constexpr double GAP_PROBABILITY = 0.3;
    static constexpr double STALL_PROBABILITY = 0.4;

    bool coin(double probability) { return std::uniform_real_distribution<double>(0.0, 1.0)(rng_) < probability; }

    int fd_;
    Vboard& top_;
    Clock::duration frame_timeout_;
    Clock::time_point last_input_ = Clock::now();
    bool expire_ = false;
    bool stress_;
    std::mt19937 rng_;
    bool offering_ = false;
    std::deque<uint8_t> pending_;
    std::vector<uint8_t> outgoing_;
    uint64_t cycles_ = 0;
    bool sent_this_cycle_ = false;
};

}  // namespace

int main(int argc, char** argv) {
    if (argc < 3 || argc > 5) {
        std::fprintf(stderr, "usage: %s PORT FRAME_TIMEOUT_MS [STATS_FILE [SEED]]\n", argv[0]);
        return 2;
    }
    const int port = std::atoi(argv[1]);
    if (port <= 0 || port > 65535) {
        std::fprintf(stderr, "board: PORT must be in 1..65535, got %s\n", argv[1]);
        return 2;
    }
    const double frame_timeout_ms = std::strtod(argv[2], nullptr);
    if (!(frame_timeout_ms > 0)) {
        std::fprintf(stderr, "board: FRAME_TIMEOUT_MS must be positive, got %s\n", argv[2]);
        return 2;
    }
    auto context = std::make_unique<VerilatedContext>();
    context->commandArgs(1, argv);
    auto top = std::make_unique<Vboard>(context.get());
    const int fd = connect_loopback(port);
    const auto started = Clock::now();
    std::optional<uint32_t> seed;
    if (argc == 5) seed = static_cast<uint32_t>(std::strtoul(argv[4], nullptr, 10));
    const auto frame_timeout = std::chrono::duration_cast<Clock::duration>(
        std::chrono::duration<double, std::milli>(frame_timeout_ms));
    Bridge bridge(fd, *top, frame_timeout, seed);
    bridge.reset();
    const double simulating = bridge.serve();
    close(fd);
    top->final();
    if (argc >= 4) {
        FILE* stats = std::fopen(argv[3], "w");
        if (stats == nullptr) fail("stats file");
        std::fprintf(stats, "{\"cycles\": %llu, \"seconds\": %.6f, \"sim_seconds\": %.6f}\n",
                     static_cast<unsigned long long>(bridge.cycles()), seconds_since(started), simulating);
        std::fclose(stats);
    }
    return 0;
}
