package main

import "github.com/twmb/franz-go/pkg/kerr"

var kerrGroupNotFound = kerr.GroupIDNotFound
