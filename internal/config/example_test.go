package config_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/trustpool/trustpool/internal/config"
)

// AgentConfig is how a daemon declares its configuration: sections are
// structs tagged with oslo's section names, keys are tagged with oslo's
// option names.
type AgentConfig struct {
	Default struct {
		Host            string `toml:"host"`
		TransportURL    string `toml:"transport_url"`
		ControlExchange string `toml:"control_exchange"`
	} `toml:"DEFAULT"`
	Rabbit struct {
		HeartbeatTimeoutThreshold int  `toml:"heartbeat_timeout_threshold"`
		AMQPDurableQueues         bool `toml:"amqp_durable_queues"`
	} `toml:"oslo_messaging_rabbit"`
}

func ExampleLoad() {
	dir, err := os.MkdirTemp("", "example")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	file := filepath.Join(dir, "agent.toml")
	text := "[DEFAULT]\ntransport_url = \"rabbit://guest:guest@127.0.0.1:5672/\"\n\n[oslo_messaging_rabbit]\nheartbeat_timeout_threshold = 30\n"
	if err := os.WriteFile(file, []byte(text), 0o600); err != nil {
		panic(err)
	}

	var cfg AgentConfig // defaults first
	cfg.Default.Host = "compute-1"
	cfg.Default.ControlExchange = "trustpool"
	cfg.Rabbit.HeartbeatTimeoutThreshold = 60

	err = config.Load(&cfg, config.LoadOptions{
		File:      file,
		Environ:   []string{"TRUSTPOOL_OSLO_MESSAGING_RABBIT__AMQP_DURABLE_QUEUES=yes"},
		Overrides: []string{"DEFAULT.host=compute-2"}, // e.g. from --set
	})
	fmt.Println(err)
	fmt.Printf("%+v\n", cfg)

	// Mistakes are reported together, each naming section.key.
	err = config.Load(&cfg, config.LoadOptions{
		Environ:   []string{"TRUSTPOOL_DEFAULT__HOTS=x"},
		Overrides: []string{"oslo_messaging_rabbit.amqp_durable_queues=perhaps"},
	})
	fmt.Println(err)
	fmt.Println(errors.Is(err, config.ErrUnknownKey), errors.Is(err, config.ErrInvalidValue))
	// Output:
	// <nil>
	// {Default:{Host:compute-2 TransportURL:rabbit://guest:guest@127.0.0.1:5672/ ControlExchange:trustpool} Rabbit:{HeartbeatTimeoutThreshold:30 AMQPDurableQueues:true}}
	// env TRUSTPOOL_DEFAULT__HOTS: DEFAULT.hots: unknown configuration key
	// flag: oslo_messaging_rabbit.amqp_durable_queues: invalid configuration value: "perhaps" is not a boolean (true/false, yes/no, on/off, 1/0)
	// true true
}
