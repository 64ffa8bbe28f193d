package esource_test

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"time"

	"github.com/esbridge/esbridge/esource"
)

func ExampleEvent_WriteTo() {
	ev := esource.Event{ID: "orders:42", Type: "order", Data: "line one\nline two"}
	if _, err := ev.WriteTo(os.Stdout); err != nil {
		fmt.Println(err)
	}
	json := esource.Event{Data: map[string]any{"sku": "A-1", "qty": 2}}
	if _, err := json.WriteTo(os.Stdout); err != nil {
		fmt.Println(err)
	}
	bad := esource.Event{ID: "a\nb"}
	_, err := bad.WriteTo(os.Stdout)
	fmt.Println(err)
	// Output:
	// id: orders:42
	// event: order
	// data: line one
	// data: line two
	//
	// data: {"qty":2,"sku":"A-1"}
	//
	// esource: invalid event: id "a\nb" contains CR, LF or NUL
}

func ExampleEventSource() {
	es, err := esource.New(esource.WithRetry(2 * time.Second))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer es.Shutdown(context.Background())
	srv := httptest.NewServer(es)
	defer srv.Close()

	for i := range 3 {
		es.Publish(esource.Event{ID: fmt.Sprint(i + 1), Data: fmt.Sprintf("event %d", i+1)})
	}

	// A browser that saw event 1 reconnects and gets what followed.
	req, _ := http.NewRequest("GET", srv.URL, nil)
	req.Header.Set("Last-Event-ID", "1")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer resp.Body.Close()
	fmt.Println(resp.Status, resp.Header.Get("Content-Type"))
	r := bufio.NewReader(resp.Body)
	for range 8 {
		line, _ := r.ReadString('\n')
		fmt.Printf("%q\n", line)
	}
	// Output:
	// 200 OK text/event-stream; charset=utf-8
	// "retry: 2000\n"
	// "\n"
	// "id: 2\n"
	// "data: event 2\n"
	// "\n"
	// "id: 3\n"
	// "data: event 3\n"
	// "\n"
}

func ExampleEventSource_Tee() {
	es, err := esource.New()
	if err != nil {
		fmt.Println(err)
		return
	}
	defer es.Shutdown(context.Background())
	es.Publish(esource.Event{ID: "1", Data: "one"})
	es.Publish(esource.Event{ID: "2", Type: "note", Data: "two"})

	events, err := es.Tee(context.Background(), "1")
	if err != nil {
		fmt.Println(err)
		return
	}
	for ev := range events {
		fmt.Printf("%s %q %q\n", ev.ID, ev.Type, ev.Data)
		break
	}
	// Output:
	// 2 "note" "two"
}
