package nats_test

import (
	"fmt"
	"net/url"

	"github.com/esbridge/esbridge/source/nats"
)

func ExampleParseURL() {
	u, _ := url.Parse("jetstream://app:secret@nats1:4222,nats2:4222/ORDERS?subject=orders.eu.>&tls=true")
	cfg, err := nats.ParseURL(u)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("%q %q %q %s %v\n", cfg.Servers, cfg.Stream, cfg.Subject, cfg.User, cfg.TLS)

	u, _ = url.Parse("nats://nats1:4222/orders.*?start=earliest")
	_, err = nats.ParseURL(u)
	fmt.Println(err)
	// Output:
	// ["nats1:4222" "nats2:4222"] "ORDERS" "orders.eu.>" app true
	// nats: unknown URL query parameter "start"
}
