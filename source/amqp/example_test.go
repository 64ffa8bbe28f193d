package amqp_test

import (
	"fmt"
	"net/url"

	"github.com/esbridge/esbridge/source/amqp"
)

func ExampleParseURL() {
	u, _ := url.Parse("amqp://app:secret@rabbit:5672/shop?stream=orders&prefetch=500")
	cfg, err := amqp.ParseURL(u)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("%q %d\n", cfg.Stream, cfg.Prefetch)

	u, _ = url.Parse("amqp://rabbit/shop?exchange=events&queue=orders")
	_, err = amqp.ParseURL(u)
	fmt.Println(err)
	// Output:
	// "orders" 500
	// amqp: give only one of stream, exchange and queue
}
